// libFuzzer target: bytes → the agent socket's frame decoder → protobuf decode → the
// daemon's real request dispatch (AgentService), with a policy, a state database on
// /dev/shm and an attested caller, all in memory of this process. Invariants checked per
// input: nothing crashes, every request gets exactly its own answer (same id, a status).
// Built and run by scripts/fuzz.sh.
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import LanyardCore
@testable import LanyardServer
import LanyardWire
import Logging
import NIOCore
import NIOEmbedded

/// The attested process never changes here (the races have their own tests).
struct SameProcess: Attestor {
    func attest(_ creds: PeerCredentials, pidfd: PidFD?) -> AttestedPeer {
        AttestedPeer(facts: PeerFacts(uid: creds.uid, gid: creds.gid, pid: creds.pid))
    }
    func isStillSame(_ peer: AttestedPeer) -> Bool { true }
}

final class Harness: @unchecked Sendable {
    let daemon: Daemon
    let agent: Connection
    let stranger: Connection

    init() {
        var template = Array("/dev/shm/lanyard-fuzz.XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        let policy = """
            trust_domain: fuzz.internal
            approvers: { uids: [4100] }
            services:
              github: { kind: opaque, max_ttl_seconds: 600, single_use: false }
              deploy: { kind: jwt }
              openai: { kind: static }
            capabilities:
              github:read_repo:  { risk: low }
              github:introspect: { risk: low }
              github:rotate:     { risk: low }
              github:push:       { risk: medium }
              deploy:production: { risk: high }
              openai:chat:       { risk: low }
            agents:
              a: { uid: 4000, grants: [github:read_repo, github:introspect, github:rotate, github:push, deploy:production, openai:chat] }

            """
        _ = policy.withCString { text in
            let f = fopen(dir + "/policy.yaml", "w")!
            defer { fclose(f) }
            return fputs(text, f)
        }
        let keyPath = dir + "/master.key"
        let fd = open(keyPath, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        let key = [UInt8](repeating: 0x42, count: 32)
        _ = key.withUnsafeBytes { write(fd, $0.baseAddress, 32) }
        close(fd)
        var config = DaemonConfig(policyPath: dir + "/policy.yaml", stateDir: dir + "/state",
                                  agentSocket: dir + "/agent.sock", adminSocket: dir + "/admin.sock")
        config.masterKeyFile = keyPath
        config.adminGroup = nil
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        daemon = try! Daemon(config: config, attestor: SameProcess(), logger: logger)
        agent = Connection(peer: AttestedPeer(facts: PeerFacts(uid: 4000, gid: 4000, pid: getpid())),
                           credentials: PeerCredentials(uid: 4000, gid: 4000, pid: getpid()), sender: getpid())
        stranger = Connection(peer: AttestedPeer(facts: PeerFacts(uid: 4001, gid: 4001, pid: getpid())),
                              credentials: PeerCredentials(uid: 4001, gid: 4001, pid: getpid()), sender: getpid())
    }

    /// Dispatches on the daemon's own service and waits for the answer.
    func answer(_ request: Lanyard_V1_Request, from connection: Connection) -> Lanyard_V1_Response {
        let done = DispatchSemaphore(value: 0)
        let box = ResponseBox()
        Task {
            box.response = await daemon.agentService.handle(request, connection)
            done.signal()
        }
        done.wait()
        return box.response!
    }
}

final class ResponseBox: @unchecked Sendable { var response: Lanyard_V1_Response? }

let harness = Harness()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // The first byte picks the caller (registered agent or stranger); the rest is the stream.
    guard size > 0 else { return 0 }
    let connection = data[0] & 1 == 0 ? harness.agent : harness.stranger
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
    defer { _ = try? channel.finish() }
    do {
        try channel.writeInbound(ByteBuffer(bytes: UnsafeBufferPointer(start: data + 1, count: size - 1)))
    } catch {
        return 0  // a malformed stream: the listener closes the connection with that error
    }
    var frames = 0
    while frames < 16, let frame = try? channel.readInbound(as: ByteBuffer.self) {
        frames += 1
        guard var request = try? Lanyard_V1_Request(serializedBytes: Array(frame.readableBytesView)) else { continue }
        // A long poll would only wait; the fuzzer wants the paths, not the waiting.
        if case .awaitApproval(var c)? = request.call {
            c.waitMs = 0
            request.awaitApproval = c
        }
        let response = harness.answer(request, from: connection)
        precondition(response.id == request.id, "answered id \(response.id) for request \(request.id)")
        precondition(response.hasStatus || response.result != nil, "an answer with neither status nor result")
    }
    return 0
}
