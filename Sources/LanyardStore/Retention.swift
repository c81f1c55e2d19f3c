/// Deleting what ended long ago (the operator's retention), so the state database does
/// not grow without bound. The audit chain is never pruned.
extension Store {
    /// How many rows of each kind one pass deletes.
    public struct PruneCounts: Sendable, Equatable, CustomStringConvertible {
        public var approvals = 0
        public var leases = 0
        public var revocations = 0
        public var standing = 0
        public var identities = 0
        public var total: Int { approvals + leases + revocations + standing + identities }
        public var description: String {
            "pruned \(approvals) approvals, \(leases) leases, \(revocations) upstream revocations, \(standing) standing approvals, \(identities) identities"
        }
    }

    /// Rows deleted per table and pass at most (the rest go in the next pass).
    static let pruneBatch = 10_000

    /// What ended before `cutoff`: decided, used or expired approvals; ended leases; upstream
    /// revocations still queued (their credentials expired long ago); lapsed standing
    /// approvals; expired identities. Returns the counts and the change that deletes them.
    package func prune(endedBeforeMicros cutoff: Int64) throws -> (PruneCounts, Mutation) {
        let tables: [(table: String, condition: String)] = [
            ("approvals", "state NOT IN ('pending', 'approved') AND expires_us < ?"),
            ("leases", "state != 'active' AND ended_us < ?"),
            ("upstream_revocations", "queued_us < ?"),
            ("standing_approvals", "until_us < ?"),
            ("issued_identities", "expires_us < ?"),
        ]
        let counts = try read { db in
            try tables.map { t in
                Int(try db.prepare("SELECT count(*) FROM (SELECT 1 FROM \(t.table) WHERE \(t.condition) LIMIT \(Self.pruneBatch))")
                    .bind(.int(cutoff)).one { $0.int(0) } ?? 0)
            }
        }
        let result = PruneCounts(approvals: counts[0], leases: counts[1], revocations: counts[2], standing: counts[3], identities: counts[4])
        return (result, { db in
            for t in tables {
                try db.prepare("DELETE FROM \(t.table) WHERE rowid IN (SELECT rowid FROM \(t.table) WHERE \(t.condition) LIMIT \(Self.pruneBatch))")
                    .bind(.int(cutoff)).run()
            }
        })
    }
}
