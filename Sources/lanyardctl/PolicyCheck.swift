import ArgumentParser
import LanyardCore
import LanyardWire

extension PolicyCommand {
    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Explain how the policy decides a request: the agent selected, the grant, the risk, the route and the limits.",
            discussion: "Offline against a file with --policy FILE; otherwise online against the running policy (admins).")
        @OptionGroup var sockets: Sockets
        @Option(help: "The agent asking, by name.") var agent: String = ""
        @Option(help: "The caller's facts instead of a name: uid=N,gid=N,exe=PATH,unit=NAME.") var facts: String = ""
        @Option(help: "A policy file to explain offline (no daemon needed).") var policy: String = ""
        @Option(help: "The resource acted on.") var resource: String = ""
        @Option(name: .customLong("arg"), help: "An argument key=value (repeatable).") var args: [String] = []
        @Argument(help: "The capability, service:action.") var capability: String

        func run() async throws {
            guard agent.isEmpty != facts.isEmpty else { throw Failure("give exactly one of --agent NAME or --facts uid=N,...") }
            let args = try keyValues(self.args)
            let text: String, decision: String, code: String
            if policy.isEmpty {
                var req = Lanyard_V1_AdminRequest()
                req.policyExplain = .with {
                    $0.agent = agent
                    $0.facts = facts
                    $0.capability = capability
                    $0.resource = resource
                    $0.args = args
                }
                let r = try await sockets.admin.call(req).policyExplain
                (text, decision, code) = (r.text, r.decision, r.reasonCode)
            } else {
                let subject: PolicyExplain.Subject
                if facts.isEmpty { subject = .agent(agent) } else {
                    do { subject = .facts(try CallerFacts(parsing: facts)) } catch { throw Failure("--facts: \(error)") }
                }
                let e = PolicyExplain.explain(.init(subject: subject, capability: capability, resource: resource, args: args),
                                              in: try PolicyCommand.parse(policy))
                (text, decision, code) = (e.text, e.agent == nil ? "" : e.verdict.decision.rawValue, e.verdict.code.rawValue)
            }
            sockets.emit(.object([("decision", .string(decision)), ("reason_code", .string(code)), ("text", .string(text))])) { text.shownLines }
        }
    }

    struct Test: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a policy's test cases offline (exit 0 all pass, 1 a case fails, 2 the policy or test file is invalid).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The policy file.") var policy: String
        @Argument(help: "The test file (YAML: cases of agent or facts, capability, expect).") var tests: String

        func run() async throws {
            let policy = try PolicyCommand.parse(self.policy, code: 2)
            let file: PolicyTestFile
            do { file = try PolicyTestFile.parse(try PolicyCommand.read(tests, code: 2), file: tests) } catch let e as PolicyError {
                throw Failure("invalid test file: \(e)", code: 2)
            }
            let failures = file.run(against: policy)
            sockets.emit(.object([("cases", .int(Int64(file.cases.count))), ("failed", .int(Int64(failures.count))),
                                  ("failures", .array(failures.map { .string($0.description) }))])) {
                (failures.map(\.description) + ["\(file.cases.count - failures.count) of \(file.cases.count) cases pass"])
                    .joined(separator: "\n").shownLines
            }
            if !failures.isEmpty { throw ExitCode(1) }
        }
    }
}
