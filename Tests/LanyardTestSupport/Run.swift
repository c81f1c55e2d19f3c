import Foundation

public struct RunResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a program to completion, optionally as another user (via setpriv), without a shell.
@discardableResult
public func run(_ argv: [String], as user: (uid: UInt32, gid: UInt32)? = nil, env: [String: String] = [:], stdin: String? = nil) throws -> RunResult {
    let p = Process()
    var args = argv
    if let user, user.uid != getuid() {
        args = ["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"] + argv
    }
    p.executableURL = URL(fileURLWithPath: args[0])
    p.arguments = Array(args.dropFirst())
    var environment = ProcessInfo.processInfo.environment
    environment.merge(env) { $1 }
    p.environment = environment
    // Files, not pipes: a chatty child can never block on a full pipe.
    let outPath = TestSupport.tempDir("out") + "/out", errPath = outPath + ".err"
    defer { TestSupport.remove((outPath as NSString).deletingLastPathComponent) }
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    p.standardOutput = FileHandle(forWritingAtPath: outPath)
    p.standardError = FileHandle(forWritingAtPath: errPath)
    let input = Pipe()
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: TestSupport.readText(outPath) ?? "", stderr: TestSupport.readText(errPath) ?? "")
}


/// Runs blocking work (a child process, a socket read) on its own thread, so that an
/// async test never holds one of the few cooperative threads the in-process daemons need.
public func onThread<R: Sendable>(_ work: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
