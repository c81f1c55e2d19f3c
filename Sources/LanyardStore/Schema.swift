/// The database layout (DESIGN.md section 13). Later versions append migrations;
/// `PRAGMA user_version` records how far a database has come.
enum Schema {
    static let migrations: [String] = [
        """
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            time_us INTEGER NOT NULL,
            event TEXT NOT NULL,
            agent_id TEXT NOT NULL DEFAULT '',
            agent TEXT NOT NULL DEFAULT '',
            uid INTEGER, gid INTEGER, pid INTEGER,
            capability TEXT NOT NULL DEFAULT '',
            resource TEXT NOT NULL DEFAULT '',
            decision TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL DEFAULT '',
            lease_id TEXT NOT NULL DEFAULT '',
            approval_id TEXT NOT NULL DEFAULT '',
            approver TEXT NOT NULL DEFAULT '',
            policy_version TEXT NOT NULL DEFAULT '',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_agent ON audit(agent);
        CREATE INDEX audit_time ON audit(time_us);
        CREATE TABLE policy_versions (
            version TEXT PRIMARY KEY,
            first_loaded_us INTEGER NOT NULL,
            path TEXT NOT NULL,
            source TEXT NOT NULL
        );
        CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            created_us INTEGER NOT NULL
        );
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            binding_code TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            uid INTEGER NOT NULL, pid INTEGER NOT NULL, exe TEXT NOT NULL DEFAULT '',
            capabilities TEXT NOT NULL,
            resource TEXT NOT NULL DEFAULT '',
            args TEXT NOT NULL DEFAULT '',
            amount TEXT NOT NULL DEFAULT '',
            risk INTEGER NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            created_us INTEGER NOT NULL,
            expires_us INTEGER NOT NULL,
            approvers TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX approvals_state ON approvals(state);
        """,
        """
        CREATE TABLE leases (
            id TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            service TEXT NOT NULL,
            kind TEXT NOT NULL,
            scope TEXT NOT NULL,
            secret_hash TEXT UNIQUE,
            version INTEGER NOT NULL,
            issued_us INTEGER NOT NULL,
            expires_us INTEGER NOT NULL,
            state TEXT NOT NULL,
            single_use INTEGER NOT NULL DEFAULT 0,
            ended_us INTEGER,
            ended_reason TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX leases_agent ON leases(agent_id, state);
        CREATE INDEX leases_service ON leases(service, state);
        CREATE INDEX leases_expiry ON leases(state, expires_us);
        CREATE TABLE secrets (
            service TEXT NOT NULL,
            version INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            created_us INTEGER NOT NULL,
            PRIMARY KEY (service, version)
        );
        CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            alg TEXT NOT NULL,
            public_key BLOB NOT NULL,
            sealed_private BLOB NOT NULL,
            created_us INTEGER NOT NULL,
            retired_us INTEGER
        );
        CREATE TABLE service_versions (
            service TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            rotated_us INTEGER NOT NULL
        );
        """,
        """
        ALTER TABLE approvals ADD COLUMN quorum INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE approvals ADD COLUMN timeout_us INTEGER NOT NULL DEFAULT 300000000;
        ALTER TABLE approvals ADD COLUMN decided_reason TEXT NOT NULL DEFAULT '';
        CREATE TABLE standing_approvals (
            agent_id TEXT NOT NULL,
            capability TEXT NOT NULL,
            resource TEXT NOT NULL,
            until_us INTEGER NOT NULL,
            approver TEXT NOT NULL,
            approval_id TEXT NOT NULL,
            PRIMARY KEY (agent_id, capability, resource)
        );
        """,
        """
        CREATE TABLE issued_identities (
            jti TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL,
            audience TEXT NOT NULL,
            expires_us INTEGER NOT NULL,
            revoked_us INTEGER
        );
        CREATE INDEX issued_identities_expiry ON issued_identities(expires_us);
        """,
        """
        ALTER TABLE leases ADD COLUMN upstream TEXT NOT NULL DEFAULT '';
        CREATE TABLE upstream_revocations (
            lease_id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            upstream TEXT NOT NULL,
            queued_us INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_us INTEGER NOT NULL,
            last_error TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX upstream_revocations_next ON upstream_revocations(next_us);
        """,
        // Row MACs (RowAuthenticator), filled in by Store.adopt in this migration's
        // transaction; approval args become length-prefixed (ApprovalArgs).
        """
        ALTER TABLE approvals ADD COLUMN mac BLOB;
        ALTER TABLE standing_approvals ADD COLUMN mac BLOB;
        ALTER TABLE leases ADD COLUMN upstream_revoked_us INTEGER;
        UPDATE leases SET upstream_revoked_us = ended_us
          WHERE upstream != '' AND state != 'active' AND id NOT IN (SELECT lease_id FROM upstream_revocations);
        ALTER TABLE leases ADD COLUMN mac BLOB;
        ALTER TABLE upstream_revocations ADD COLUMN mac BLOB;
        ALTER TABLE secrets ADD COLUMN mac BLOB;
        CREATE TABLE secret_heads (
            service TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            mac BLOB
        );
        INSERT INTO secret_heads(service, version) SELECT service, max(version) FROM secrets GROUP BY service;
        ALTER TABLE signing_keys ADD COLUMN mac BLOB;
        DELETE FROM signing_keys WHERE purpose = 'audit-checkpoint';  -- checkpoints now carry a MAC, not a signature
        ALTER TABLE service_versions ADD COLUMN mac BLOB;
        ALTER TABLE issued_identities ADD COLUMN mac BLOB;
        ALTER TABLE agents ADD COLUMN mac BLOB;
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            mac BLOB
        );
        """,
        """
        -- Keyset pages of leases (ListLeases, leases list) read an index range, not a
        -- sort of every lease of the agent or service.
        CREATE INDEX leases_agent_page ON leases(agent_id, state, issued_us, id);
        CREATE INDEX leases_service_page ON leases(service, state, issued_us, id);
        CREATE INDEX leases_page ON leases(state, issued_us, id);
        """,
        """
        -- MCP tool calls (lanyard-mcp): the audit record names server, tool and the
        -- arguments' digest; a retried call finds its live approval by digest.
        ALTER TABLE audit ADD COLUMN mcp_server TEXT NOT NULL DEFAULT '';
        ALTER TABLE audit ADD COLUMN mcp_tool TEXT NOT NULL DEFAULT '';
        ALTER TABLE audit ADD COLUMN args_digest TEXT NOT NULL DEFAULT '';
        CREATE INDEX approvals_digest ON approvals(agent_id, digest, state);
        """,
        """
        -- Leases bound to a process (bind_to_process): pid and start time, so that a lease
        -- whose process died while lanyardd was down is found at startup. In the row's MAC
        -- when set (AuthenticatedTable.added).
        ALTER TABLE leases ADD COLUMN process_pid INTEGER;
        ALTER TABLE leases ADD COLUMN process_start INTEGER;
        CREATE INDEX leases_bound ON leases(state, process_pid);
        """,
        """
        -- Reason codes (issue 19): the stable machine name of why a decision is what it is.
        ALTER TABLE audit ADD COLUMN reason_code TEXT NOT NULL DEFAULT '';
        """,
        """
        -- Grant limits (issue 19): each grant's use in its current period (rate: calls,
        -- budget: amount spent), written in the transaction of the decision it counts.
        CREATE TABLE limit_counters (
            agent_id TEXT NOT NULL,
            capability TEXT NOT NULL,
            kind TEXT NOT NULL,
            period_start INTEGER NOT NULL,
            used INTEGER NOT NULL,
            mac BLOB,
            PRIMARY KEY (agent_id, capability, kind)
        );
        """,
        """
        -- The grant counters' digest in the authenticated audit head (CountersDigest): a
        -- counter deleted or rolled back at rest no longer matches it. Counters are keyed by
        -- the agent's name (an agent's stored id is re-assigned when its row is lost); the
        -- rows renamed here no longer carry their MAC, so limited grants are refused until an
        -- admin runs `lanyardctl limits reset --all` (fail closed, once, at this upgrade).
        ALTER TABLE audit_head ADD COLUMN limits_digest BLOB;
        ALTER TABLE limit_counters RENAME COLUMN agent_id TO agent;
        UPDATE limit_counters SET agent = COALESCE((SELECT name FROM agents WHERE agents.id = limit_counters.agent), agent);
        """,
        """
        -- The systemd unit of the process that asked (issue 21: approvers see it). In the
        -- row's MAC when set (AuthenticatedTable.added).
        ALTER TABLE approvals ADD COLUMN unit TEXT;
        """,
        """
        -- Fewer indexes written with each lease (issue 18): leases_agent_page and
        -- leases_service_page begin with the columns of leases_agent and leases_service,
        -- which only repeated them, and leases_bound holds the bound leases only.
        DROP INDEX IF EXISTS leases_agent;
        DROP INDEX IF EXISTS leases_service;
        DROP INDEX IF EXISTS leases_bound;
        CREATE INDEX leases_bound ON leases(state, issued_us) WHERE process_pid IS NOT NULL;
        """,
    ]

    /// Applies the migrations this database lacks, each in its own transaction. `adopt`
    /// runs inside the one that introduces row MACs (`approvals.mac`), whatever its place
    /// in the list, so old rows are authenticated exactly once, atomically with it.
    static func migrate(_ db: SQLiteConnection, adopt: (SQLiteConnection) throws -> Void) throws(StoreError) {
        let version: Int
        do {
            version = try db.prepare("PRAGMA user_version").one { Int($0.int(0)) } ?? 0
        } catch {
            throw StoreError("cannot read the schema version: \(error)")
        }
        guard version <= migrations.count else {
            throw StoreError("the database was written by a newer Lanyard (schema \(version), this build knows \(migrations.count)); upgrade lanyardd")
        }
        for (i, sql) in migrations.enumerated().dropFirst(version) {
            do {
                try db.transaction {
                    let authenticatedBefore = try hasRowMACs(db)
                    try db.exec(sql)
                    if !authenticatedBefore, try hasRowMACs(db) { try adopt(db) }
                    try db.exec("PRAGMA user_version = \(i + 1)")
                }
            } catch {
                throw StoreError("database migration \(i + 1) failed: \(error)")
            }
        }
    }

    private static func hasRowMACs(_ db: SQLiteConnection) throws -> Bool {
        try db.prepare("SELECT 1 FROM pragma_table_info('approvals') WHERE name = 'mac'").one { _ in true } ?? false
    }
}
