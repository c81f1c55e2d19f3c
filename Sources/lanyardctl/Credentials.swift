#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire

extension Lanyard_V1_LeaseInfo {
    var json: JSON {
        .object([("lease_id", .string(leaseID)), ("agent", .string(agent)), ("service", .string(service)), ("kind", .string(kind)),
                 ("scope", .array(scope.map { .string($0) })), ("issued_at", .int(issuedAt)), ("expires_at", .int(expiresAt)),
                 ("state", .string(state))])
    }

    var line: String {
        "\(leaseID.field)  \(agent.field)  \(service.field)  \(scope.fields(","))  expires \(rfc3339(micros: expiresAt * 1_000_000))  \(state.field)"
    }
}

/// Reads a secret from standard input (never from argv: argv is visible to every user).
/// On a terminal the secret is not echoed while it is typed (`HiddenInput`).
func readSecretFromStdin(_ what: String) throws -> [UInt8] {
    let hidden = try HiddenInput.begin()
    defer { if hidden { HiddenInput.end() } }
    if hidden { FileHandleStderr.write("\(what): type or paste it (it is not shown), then Enter and Ctrl-D\n") }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(0, &chunk, chunk.count)
        if n <= 0 { break }
        bytes += chunk[0..<n]
        if bytes.count > 16 * 1024 { throw Failure("\(what) is larger than 16 KiB") }
    }
    while let last = bytes.last, last == 0x0A || last == 0x0D { bytes.removeLast() }  // the newline of `echo`
    if bytes.isEmpty { throw Failure("\(what) is empty: pipe it on standard input, or type it and end with Enter and Ctrl-D") }
    return bytes
}

/// Terminal echo off on standard input while a secret is typed. The saved settings come
/// back at `end` (every return and throw goes through it) and on the signals that end a
/// typing session (Ctrl-C, Ctrl-\, hangup, kill), before the signal takes its course.
enum HiddenInput {
    /// The saved settings and the quiet ones, in heap memory larger than the C struct: a
    /// Swift global `termios` was emitted 57 bytes long, and glibc's tcgetattr writes 60
    /// into it (AddressSanitizer: global-buffer-overflow).
    nonisolated(unsafe) private static let settings: UnsafeMutableRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 16)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 256)
        return p
    }()
    private static var saved: UnsafeMutablePointer<termios> { settings.assumingMemoryBound(to: termios.self) }
    private static var quiet: UnsafeMutablePointer<termios> { (settings + 128).assumingMemoryBound(to: termios.self) }
    private static let signals = [SIGINT, SIGQUIT, SIGHUP, SIGTERM]

    /// Turns echo off when standard input is a terminal; false (and nothing done) otherwise.
    static func begin() throws -> Bool {
        guard isatty(0) == 1 else { return false }
        guard tcgetattr(0, saved) == 0, tcgetattr(0, quiet) == 0 else {
            throw Failure("cannot read the terminal's settings to hide the secret; pipe it on standard input instead")
        }
        for s in signals { signal(s, restoreAndResignal) }
        quiet.pointee.c_lflag &= ~tcflag_t(ECHO | ECHONL)
        guard tcsetattr(0, TCSANOW, quiet) == 0 else {
            end()
            throw Failure("cannot turn off the terminal's echo to hide the secret; pipe it on standard input instead")
        }
        return true
    }

    static func end() {
        tcsetattr(0, TCSANOW, saved)
        for s in signals { signal(s, SIG_DFL) }
        FileHandleStderr.write("\n")  // the Enter the user typed was not echoed
    }

    /// Async-signal-safe: tcsetattr, signal and raise only (`settings` is set before the
    /// handler is installed).
    private static let restoreAndResignal: @convention(c) (Int32) -> Void = { sig in
        tcsetattr(0, TCSANOW, HiddenInput.saved)
        signal(sig, SIG_DFL)
        raise(sig)
    }
}

enum FileHandleStderr {
    static func write(_ s: String) { _ = s.withCString { Glibc.write(2, $0, strlen($0)) } }
}

struct Provision: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Get a short-lived credential for a service (prints the secret on stdout).")
    @OptionGroup var sockets: Sockets
    @Argument(help: "The service.") var service: String
    @Option(parsing: .upToNextOption, help: "Capabilities of that service the credential is for.") var scope: [String]
    @Option(help: "Lifetime in seconds (0: the service default; at most 900).") var ttl: UInt64 = 0
    @Option(help: "The resource acted on.") var resource: String = ""
    @Option(name: .customLong("approval"), help: "An approved approval id.") var approval: String = ""
    @Flag(help: "Bind the lease to this lanyardctl process: it is revoked when lanyardctl exits (see `exec` for a command's own process).")
    var bindToProcess = false

    func run() async throws {
        var req = Lanyard_V1_Request()
        req.provision = .with {
            $0.service = service
            $0.scope = scope
            $0.ttlSeconds = ttl
            $0.resource = resource
            $0.approvalID = approval
            $0.bindToProcess = bindToProcess
        }
        let client = sockets.agent
        let lease: Lanyard_V1_Lease
        do {
            lease = try await client.call(req).provision.lease
        } catch let e as LanyardError {
            if let r = e.response as? Lanyard_V1_Response, !r.provision.approvalID.isEmpty {
                sockets.emit(.object([("approval_id", .string(r.provision.approvalID)), ("binding_code", .string(r.provision.bindingCode))])) {
                    "approval needed: \(r.provision.approvalID.field) (code \(r.provision.bindingCode.field))"
                }
                throw Failure("\(e.code.name): \(e.message)", code: 3)
            }
            if let r = e.response as? Lanyard_V1_Response, !r.provision.reasonCode.isEmpty {
                throw Failure("\(e.code.name) [\(r.provision.reasonCode)]: \(e.message)", code: 1)
            }
            throw e
        }
        sockets.emit(.object([("lease_id", .string(lease.leaseID)), ("service", .string(lease.service)), ("kind", .string(lease.kind)),
                              ("secret", .string(lease.secret)), ("scope", .array(lease.scope.map { .string($0) })),
                              ("issued_at", .int(lease.issuedAt)), ("expires_at", .int(lease.expiresAt))])) {
            FileHandleStderr.write("lease \(lease.leaseID.field) (\(lease.kind.field), \(lease.scope.fields(",")), expires \(rfc3339(micros: lease.expiresAt * 1_000_000)))\n")
            return lease.secret  // the credential itself, exactly: it is meant for a program
        }
    }
}

struct Revoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Revoke one of your own leases.")
    @OptionGroup var sockets: Sockets
    @Argument(help: "The lease id.") var lease: String

    func run() async throws {
        var req = Lanyard_V1_Request()
        req.revoke = .with { $0.leaseID = lease }
        let r = try await sockets.agent.call(req).revoke
        sockets.emit(.object([("revoked", .bool(r.revoked))])) { r.revoked ? "revoked \(lease.field)" : "\(lease.field) had already ended" }
    }
}

struct Introspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a secret you were shown (read from stdin); needs <service>:introspect.")
    @OptionGroup var sockets: Sockets

    func run() async throws {
        let secret = String(decoding: try readSecretFromStdin("secret"), as: UTF8.self)
        var req = Lanyard_V1_Request()
        req.introspect = .with { $0.secret = secret }
        let r = try await sockets.agent.call(req).introspect
        sockets.emit(.object([("active", .bool(r.active)), ("agent", .string(r.agent)), ("service", .string(r.service)),
                              ("scope", .array(r.scope.map { .string($0) })), ("expires_at", .int(r.expiresAt)), ("lease_id", .string(r.leaseID))])) {
            r.active ? "active: agent \(r.agent.field), \(r.service.field) \(r.scope.fields(",")), expires \(rfc3339(micros: r.expiresAt * 1_000_000))" : "inactive"
        }
        if !r.active { throw ExitCode(2) }
    }
}

struct SecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "secret", abstract: "Static service secrets (admins).",
                                                    subcommands: [Put.self, Rotate.self, List.self])

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store a static service's secret, read from stdin (sealed; never listed).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The service (kind static).") var service: String

        func run() async throws {
            let value = try readSecretFromStdin("secret for \(service)")
            var req = Lanyard_V1_AdminRequest()
            req.secretPut = .with {
                $0.service = service
                $0.value = .init(value)
            }
            let r = try await sockets.admin.call(req).secretPut
            sockets.emit(.object([("service", .string(service)), ("version", .int(Int64(r.version)))])) { "stored \(service.field) secret version \(r.version)" }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a service to a new credential version; revokes its leases.")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The service.") var service: String
        @Flag(help: "A jwt service's signing key is compromised: drop every earlier key from its JWKS at once, so every token they signed stops verifying offline (a plain rotation keeps them published until those tokens expire).")
        var compromised = false

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.secretRotate = .with {
                $0.service = service
                $0.compromised = compromised
            }
            let r = try await sockets.admin.call(req).secretRotate
            sockets.emit(.object([("version", .int(Int64(r.version))), ("revoked_leases", .int(Int64(r.revokedLeases))), ("compromised", .bool(compromised))])) {
                "\(service.field) is at version \(r.version); revoked \(r.revokedLeases) leases"
                    + (compromised ? "; earlier signing keys dropped: publish the new JWKS now (lanyardctl jwks --service \(service.field))" : "")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Services with a stored secret and its version (never the value).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.secretList = .init()
            let list = try await sockets.admin.call(req).secretList.secrets
            sockets.emit(.array(list.map { .object([("service", .string($0.service)), ("version", .int(Int64($0.version))), ("updated_at", .int($0.updatedAt))]) })) {
                list.isEmpty ? "no secrets stored" : list.map { "\($0.service.field)  version \($0.version)  \(rfc3339(micros: $0.updatedAt * 1_000_000))" }.joined(separator: "\n")
            }
        }
    }
}

struct LeasesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "leases", abstract: "Active leases, and the kill switch (admins).",
                                                    subcommands: [List.self, RevokeLeases.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active leases (never their secrets).")
        @OptionGroup var sockets: Sockets
        @Option(help: "Only this agent.") var agent: String = ""
        @Option(help: "Only this service.") var service: String = ""

        func run() async throws {
            // Page by page (each reply fits in one frame) until the daemon says there are no more.
            var leases: [Lanyard_V1_LeaseInfo] = []
            var token = ""
            repeat {
                var req = Lanyard_V1_AdminRequest()
                req.leasesList = .with {
                    $0.agent = agent
                    $0.service = service
                    $0.pageToken = token
                }
                let page = try await sockets.admin.call(req).leasesList
                leases += page.leases
                token = page.nextPageToken
            } while !token.isEmpty
            sockets.emit(.array(leases.map(\.json))) { leases.isEmpty ? "no active leases" : leases.map(\.line).joined(separator: "\n") }
        }
    }

    struct RevokeLeases: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a lease, or every lease of an agent or a service (kill switch).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "A lease id.") var lease: String?
        @Option(help: "Every lease of this agent.") var agent: String?
        @Option(help: "Every lease of this service.") var service: String?

        func validate() throws {
            guard [lease, agent, service].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of: LEASE, --agent A, --service S")
            }
        }

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.leasesRevoke = .with {
                if let lease { $0.leaseID = lease } else if let agent { $0.agent = agent } else if let service { $0.service = service }
            }
            let r = try await sockets.admin.call(req).leasesRevoke
            sockets.emit(.object([("revoked", .int(Int64(r.revoked)))])) { "revoked \(r.revoked) leases" }
        }
    }
}
