import Foundation

/// A minimal HTTP/1.1 receiver on 127.0.0.1 for webhook tests: records each request;
/// answers 200 at once (after the `statuses` given, one per request), or only after
/// `release()` when created with `hold: true`.
public final class WebhookReceiver: @unchecked Sendable {
    public struct Request: Sendable {
        /// The request line's target, e.g. `/approvals`.
        public var path: String
        public var headers: [String: String]
        public var body: Data
    }

    public let port: UInt16
    private let fd: Int32
    private let hold: Bool
    private var statuses: [Int]
    private let lock = NSCondition()
    private var requests: [Request] = []
    private var released = false
    public private(set) var responsesSent = 0

    public init(hold: Bool = false, statuses: [Int] = []) {
        self.hold = hold
        self.statuses = statuses
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 16)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        self.fd = fd
        Thread.detachNewThread { [self] in serve() }
    }

    /// Waits (60 s at most, a guard against hanging) until `count` requests have arrived; returns them.
    public func waitForRequests(_ count: Int) -> [Request] {
        let deadline = Date().addingTimeInterval(60)
        lock.lock()
        defer { lock.unlock() }
        while requests.count < count, lock.wait(until: deadline) {}
        return requests
    }

    public func release() {
        lock.lock()
        released = true
        lock.broadcast()
        lock.unlock()
    }

    public func close() {
        release()
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }

    private func serve() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return }
            Thread.detachNewThread { [self] in handle(c) }
        }
    }

    private func handle(_ c: Int32) {
        defer { Glibc.close(c) }
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 4096)
        var headers: [String: String] = [:]
        var path = ""
        var bodyStart = 0, length = 0
        while true {
            let n = read(c, &buf, buf.count)
            if n <= 0 { return }
            data.append(contentsOf: buf[0..<n])
            if bodyStart == 0, let r = data.range(of: Data("\r\n\r\n".utf8)) {
                bodyStart = r.upperBound
                let head = String(decoding: data[..<r.lowerBound], as: UTF8.self).split(separator: "\r\n")
                path = head.first.map { $0.split(separator: " ").dropFirst().first.map(String.init) ?? "" } ?? ""
                for line in head.dropFirst() {
                    if let colon = line.firstIndex(of: ":") {
                        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                }
                length = Int(headers["content-length"] ?? "0") ?? 0
            }
            if bodyStart > 0, data.count - bodyStart >= length { break }
        }
        lock.lock()
        requests.append(Request(path: path, headers: headers, body: data[bodyStart..<(bodyStart + length)]))
        let status = statuses.isEmpty ? 200 : statuses.removeFirst()
        lock.broadcast()
        while hold && !released { lock.wait() }
        responsesSent += 1
        lock.unlock()
        let response = "HTTP/1.1 \(status) \(status == 200 ? "OK" : "Error")\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        _ = response.withCString { write(c, $0, strlen($0)) }
    }
}

extension TestSupport {
    /// A loopback port that nothing listens on (connections are refused at once).
    public static func closedPort() -> UInt16 {
        bindLoopback(0)!
    }

    /// A free loopback port whose next port is free too (an OpenBao dev server also
    /// listens on port + 1, for its cluster).
    public static func closedPortPair() -> UInt16 {
        while true {
            let port = closedPort()
            if port < UInt16.max, bindLoopback(port + 1) != nil { return port }
        }
    }

    /// Binds a socket to 127.0.0.1:`port` (0: any) and closes it; the port bound, or nil.
    private static func bindLoopback(_ port: UInt16) -> UInt16? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { return nil }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }
}
