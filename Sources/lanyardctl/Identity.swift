import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire

struct IdentityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "identity", abstract: "JWT identities for agent-to-agent calls.",
                                                    subcommands: [Issue.self, Validate.self, Revoke.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Get a signed identity token for an audience (prints the token).")
        @OptionGroup var sockets: Sockets
        @Option(help: "Who the token is for.") var audience: String
        @Option(help: "Lifetime in seconds (default 300, at most 900).") var ttl: UInt32 = 0
        @Option(name: .customLong("capability"), help: "Carry only these of your grants (repeatable; default all).") var capabilities: [String] = []
        @Option(help: "A token for this sub-agent of yours instead (sub .../sub/NAME, act naming you; the policy must allow delegation).")
        var delegate: String = ""
        @Flag(help: "With --delegate: read the parent token (yours, or a sub-agent's) from stdin; the new token expires no later and carries no more.")
        var parentTokenStdin = false

        func run() async throws {
            guard !parentTokenStdin || !delegate.isEmpty else { throw ValidationError("--parent-token-stdin needs --delegate NAME") }
            let parent = parentTokenStdin ? String(decoding: try readSecretFromStdin("parent token"), as: UTF8.self) : ""
            var req = Lanyard_V1_Request()
            req.issueIdentity = .with {
                $0.audience = audience
                $0.ttlSeconds = ttl
                $0.capabilities = capabilities
                if !delegate.isEmpty {
                    $0.delegation = .with {
                        $0.name = delegate
                        $0.parentToken = parent
                    }
                }
            }
            let r = try await sockets.agent.call(req).issueIdentity
            sockets.emit(.object([("token", .string(r.token)), ("expires_at", .int(r.expiresAt))])) { r.token }
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a token for an audience (exit 0 valid, 2 invalid; prefer - to read it from stdin).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The token, or - to read it from stdin (argv is visible to other users).") var token: String
        @Option(help: "The audience you expect (yourself).") var audience: String

        func run() async throws {
            let value = token == "-" ? String(decoding: try readSecretFromStdin("token"), as: UTF8.self) : token
            var req = Lanyard_V1_Request()
            req.validateIdentity = .with {
                $0.token = value
                $0.audience = audience
            }
            let r = try await sockets.agent.call(req).validateIdentity
            let c = r.claims
            sockets.emit(.object([("valid", .bool(r.valid)), ("failed_check", .string(r.failedCheck)), ("sub", .string(c.sub)),
                                  ("agent_id", .string(c.agentID)), ("aud", .string(c.aud)), ("capabilities", .array(c.capabilities.map { .string($0) })),
                                  ("exp", .int(c.exp)), ("jti", .string(c.jti)), ("actors", .array(c.actors.map { .string($0) }))])) {
                r.valid ? "valid: \(c.sub.field) for \(c.aud.field), capabilities \(c.capabilities.fields(",")), expires \(rfc3339(micros: c.exp * 1_000_000))"
                    + (c.actors.isEmpty ? "" : ", delegated by \(c.actors.fields(" <- "))")
                        : "invalid: failed check \(r.failedCheck.quoted)"
            }
            if !r.valid { throw ExitCode(2) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an identity token by jti until it would have expired (admins).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The token's jti.") var jti: String

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.identityRevoke = .with { $0.jti = jti }
            _ = try await sockets.admin.call(req)
            sockets.emit(.object([("revoked", .bool(true))])) { "revoked \(jti.field)" }
        }
    }
}

struct Jwks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print public keys as an RFC 7517 JWKS: the identity keys, or a jwt service's.",
        discussion: "Each purpose has its own keys: give identity verifiers the identity JWKS and a jwt service the JWKS of its own access tokens (--service), never one for the other.")
    @OptionGroup var sockets: Sockets
    @Option(help: "A jwt service: print the keys of its access tokens instead of the identity keys.") var service: String = ""

    func run() async throws {
        var req = Lanyard_V1_AdminRequest()
        req.jwks = .with { $0.service = service }
        print(try await sockets.admin.call(req).jwks.json)
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "Signing keys (admins).", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign new identity tokens with a new key; old public keys stay until their tokens expire.",
            discussion: "For a jwt service's keys, use secret rotate SERVICE [--compromised].")
        @OptionGroup var sockets: Sockets
        @Flag(help: "The identity key is compromised: drop every earlier identity key from the JWKS at once, so every identity token signed before stops validating.")
        var compromised = false

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.keysRotate = .with { $0.compromised = compromised }
            let r = try await sockets.admin.call(req).keysRotate
            sockets.emit(.object([("kid", .string(r.kid)), ("compromised", .bool(compromised))])) {
                "new signing key \(r.kid.field)" + (compromised ? "; earlier identity keys dropped: publish the new JWKS now (lanyardctl jwks)" : "")
            }
        }
    }
}
