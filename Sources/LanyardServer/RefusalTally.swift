import NIOConcurrencyHelpers

/// Refusals of callers that match no agent, audited once per uid and interval with a
/// count rather than one fsync'ed record each: such a caller cannot fill the disk or
/// hold the audit writer. Every call is still refused.
final class RefusalTally: Sendable {
    private struct Entry {
        var windowStartMicros: Int64
        var unrecorded: Int
    }

    /// Callers that did not fit are audited one by one (only root makes this many uids).
    static let maxTracked = 4096

    private let entries = NIOLockedValueBox<[UInt32: Entry]>([:])
    private let intervalMicros: Int64

    init(interval: Duration) {
        let (seconds, attoseconds) = interval.components
        intervalMicros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    /// Whether this refusal gets a record of its own now, and how many refusals of `uid`
    /// went unrecorded before it (to put in that record). Otherwise it is counted.
    func note(uid: UInt32, nowMicros: Int64) -> (record: Bool, unrecorded: Int) {
        entries.withLockedValue { entries in
            if var entry = entries[uid], nowMicros - entry.windowStartMicros < intervalMicros {
                entry.unrecorded += 1
                entries[uid] = entry
                return (false, 0)
            }
            let unrecorded = entries[uid]?.unrecorded ?? 0
            if entries[uid] != nil || entries.count < Self.maxTracked {
                entries[uid] = Entry(windowStartMicros: nowMicros, unrecorded: 0)
            }
            return (true, unrecorded)
        }
    }

    /// Takes the uids whose interval has ended; those with unrecorded refusals are returned
    /// with their count and when their interval began, for one record each.
    func drain(nowMicros: Int64) -> [(uid: UInt32, unrecorded: Int, sinceMicros: Int64)] {
        entries.withLockedValue { entries in
            let ended = entries.filter { nowMicros - $0.value.windowStartMicros >= intervalMicros }
            for uid in ended.keys { entries[uid] = nil }
            return ended.filter { $0.value.unrecorded > 0 }.map { ($0.key, $0.value.unrecorded, $0.value.windowStartMicros) }.sorted { $0.uid < $1.uid }
        }
    }
}
