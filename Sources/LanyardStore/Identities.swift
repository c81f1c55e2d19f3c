/// Issued identity tokens, by `jti`: for revocation, which lasts until the token would
/// have expired anyway. A token is live only while its authenticated row says so:
/// deleting or altering the row revokes it, never revives it.
extension Store {
    package func recordIdentity(jti: String, agentID: String, audience: String, expiresMicros: Int64) -> Mutation {
        { db in
            try db.prepare("INSERT INTO issued_identities(jti, agent_id, audience, expires_us) VALUES (?, ?, ?, ?)")
                .bind(.text(jti), .text(agentID), .text(audience), .int(expiresMicros)).run()
            try self.authenticate(db, .issuedIdentities, key: [.text(jti)])
        }
    }

    /// Revokes `jti`; false when no unexpired token has it.
    package func revokeIdentity(jti: String, nowMicros: Int64) -> Mutation {
        { db in
            let (changed, _) = try self.update(db, .issuedIdentities, set: "revoked_us = ?", [.int(nowMicros)],
                                               where: "jti = ? AND revoked_us IS NULL AND expires_us > ?", [.text(jti), .int(nowMicros)])
            guard changed == 1 else { throw StoreConflict("no unexpired, unrevoked identity token has jti '\(jti.prefix(64))'") }
        }
    }

    /// Whether the daemon issued `jti` and has not revoked it (its row exists and authenticates).
    public func isIdentityLive(jti: String) throws -> Bool {
        try read { db in
            try db.prepare("SELECT \(AuthenticatedTable.issuedIdentities.selection) FROM issued_identities WHERE jti = ?").bind(.text(jti)).one { row in
                guard rows.isAuthentic(.issuedIdentities, row) else { reportTampered(.issuedIdentities, row); return false }
                return row.isNull(4)
            } ?? false
        }
    }
}
