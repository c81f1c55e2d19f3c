#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto
import NIOConcurrencyHelpers
import NIOPosix

/// The SHA-256 of a peer's running executable, for exe_sha256 selectors. It runs on a
/// thread pool (never on an event loop), awaited by the connection before its first
/// call: bounded in size, at most `perUID` at once for one uid, given up when the peer
/// goes. Only a file root alone can write is hashed: one its user can rewrite pins nothing.
final class ExeHasher: Sendable {
    enum Outcome: Equatable {
        case hash(String)
        /// The file is larger than the bound (bytes, bound).
        case tooLarge(Int64, Int64)
        /// Someone other than root can write the file (who).
        case writable(String)
        /// The process exec'd, exited or left while we looked; or /proc was unreadable.
        case gone
    }

    let maxBytes: Int64
    private let budget: UIDBudget
    private let cache = NIOLockedValueBox<[String: String]>([:])

    init(maxBytes: Int64, perUID: Int) {
        self.maxBytes = maxBytes
        budget = UIDBudget(perUID: perUID)
    }

    /// Hashes the executable of `peer` while `stillWanted` holds.
    func hash(_ peer: AttestedPeer, stillWanted: @escaping @Sendable () -> Bool) async -> Outcome {
        let fd = open("/proc/\(peer.facts.pid)/exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .gone }
        let file = FileDescriptor(fd)
        var st = stat()
        // The file must be the one attested: an exec since then hashes another program.
        guard fstat(fd, &st) == 0, FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) == peer.facts.exeFile else { return .gone }
        let facts = FileFacts(id: FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)), owner: st.st_uid,
                              mode: UInt32(st.st_mode & 0o7777), isRegular: true, isDirectory: false)
        if let who = facts.otherWriters { return .writable(who) }
        guard Int64(st.st_size) <= maxBytes else { return .tooLarge(Int64(st.st_size), maxBytes) }
        // ctime too: the owner can set mtime back after rewriting in place, never ctime.
        let key = "\(st.st_dev):\(st.st_ino):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec):\(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec):\(st.st_size)"
        if let hit = cache.withLockedValue({ $0[key] }) { return .hash(hit) }

        let uid = peer.facts.uid
        let bound = maxBytes
        await budget.acquire(uid)
        // Whoever held the slot may have hashed this very file.
        if let hit = cache.withLockedValue({ $0[key] }) {
            await budget.release(uid)
            return .hash(hit)
        }
        let digest = stillWanted() ? try? await NIOThreadPool.singleton.runIfActive {
            SHA256.hexOfFile(descriptor: file.fd, maxBytes: bound, continuing: stillWanted)
        } : nil
        await budget.release(uid)
        guard let digest = digest ?? nil else { return .gone }
        cache.withLockedValue { if $0.count > 1024 { $0.removeAll() }; $0[key] = digest }
        return .hash(digest)
    }
}

/// An open descriptor closed when the last reference goes (it crosses onto a pool thread).
private final class FileDescriptor: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// At most `perUID` holders at once per uid; the others wait their turn.
private actor UIDBudget {
    let perUID: Int
    private var holding: [UInt32: Int] = [:]
    private var waiting: [UInt32: [CheckedContinuation<Void, Never>]] = [:]

    init(perUID: Int) { self.perUID = max(1, perUID) }

    func acquire(_ uid: UInt32) async {
        if holding[uid, default: 0] < perUID {
            holding[uid, default: 0] += 1
            return
        }
        await withCheckedContinuation { waiting[uid, default: []].append($0) }
    }

    func release(_ uid: UInt32) {
        if var queue = waiting[uid], !queue.isEmpty {
            let next = queue.removeFirst()
            waiting[uid] = queue.isEmpty ? nil : queue
            next.resume()  // the slot passes on
        } else {
            holding[uid, default: 1] -= 1
            if holding[uid] == 0 { holding[uid] = nil }
        }
    }
}
