import SwiftProtobuf

/// Builds a list reply that always fits in one frame: items are taken in order until the
/// next one would pass the budget (`ServerLimits.replyBudget`); the caller says what was
/// left out (a count, or a page token to continue from).
struct ReplyBudget {
    private var left: Int

    init(bytes: Int = ServerLimits.replyBudget) { left = bytes }

    /// Whether `item` still fits (its encoding plus a repeated field's tag and length);
    /// once one does not, none after it is taken either, so the order stays whole.
    mutating func take(_ item: some SwiftProtobuf.Message) -> Bool {
        guard left > 0, let size = (try? item.serializedBytes() as [UInt8])?.count else { return false }
        left -= size + 6
        if left < 0 { left = 0; return false }
        return true
    }

    /// How many leases one page reads from the database (the budget may take fewer).
    static let pageRows = 400

    /// The leading items of `items` that fit.
    mutating func prefix<T: SwiftProtobuf.Message>(_ items: [T]) -> [T] {
        var out: [T] = []
        for item in items {
            guard take(item) else { break }
            out.append(item)
        }
        return out
    }
}
