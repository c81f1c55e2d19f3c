/// Issued identity tokens, by `jti`: for revocation, which lasts until the token would
/// have expired anyway.
extension Store {
    package func recordIdentity(jti: String, agentID: String, audience: String, expiresMicros: Int64) -> Mutation {
        { db in
            try db.prepare("INSERT INTO issued_identities(jti, agent_id, audience, expires_us) VALUES (?, ?, ?, ?)")
                .bind(.text(jti), .text(agentID), .text(audience), .int(expiresMicros)).run()
        }
    }

    /// Revokes `jti`; false when no unexpired token has it.
    package func revokeIdentity(jti: String, nowMicros: Int64) -> Mutation {
        { db in
            try db.prepare("UPDATE issued_identities SET revoked_us = ? WHERE jti = ? AND revoked_us IS NULL AND expires_us > ?")
                .bind(.int(nowMicros), .text(jti), .int(nowMicros)).run()
            guard db.changes == 1 else { throw StoreConflict("no unexpired, unrevoked identity token has jti '\(jti.prefix(64))'") }
        }
    }

    public func isIdentityRevoked(jti: String) throws -> Bool {
        try read { db in
            try db.prepare("SELECT 1 FROM issued_identities WHERE jti = ? AND revoked_us IS NOT NULL").bind(.text(jti)).one { _ in true } ?? false
        }
    }
}
