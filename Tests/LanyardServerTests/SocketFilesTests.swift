import LanyardServer
import Testing

/// Socket paths lanyardd refuses with a sentence, never a crash.
struct SocketFilesTests {
    @Test(arguments: ["agent.sock", "run/agent.sock", ""])
    func aRelativeSocketPathIsRefused(path: String) {
        #expect {
            _ = try makeListeningSocket(path: path, mode: 0o600, group: nil)
        } throws: { error in
            "\(error)".contains("is not absolute")
        }
    }
}
