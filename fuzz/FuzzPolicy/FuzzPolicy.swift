// libFuzzer target: bytes → the policy parser (YAML → validated Policy). Every input is
// either a policy or a located error; a parsed policy must survive its own invariants.
// Built and run by scripts/fuzz.sh.
import LanyardCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let policy = try PolicyParser.parse(text, file: "fuzz.yaml")
        for agent in policy.agents {
            precondition(agent.selector.uid != 0, "root parsed as an agent")
            precondition(policy.agent(named: agent.name) != nil, "agent index out of step")
            for (cap, risk) in agent.grants { precondition(risk >= policy.capabilities[cap]!, "a grant lowered a risk") }
        }
        for service in policy.services.values { precondition(service.maxTTLSeconds <= Policy.maxTTLCeilingSeconds) }
    } catch {
        precondition(!error.message.isEmpty, "an error without a message")
    }
    return 0
}
