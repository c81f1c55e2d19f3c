#if canImport(Glibc)
import Glibc
#endif

/// What the host says about files, users' groups and ptrace; `LocalHost` reads the real
/// ones, tests inject their own.
public protocol HostFacts {
    /// The file at `path` (symbolic links followed), or nil when there is none.
    func file(_ path: String) -> FileFacts?
    /// `path` with every symbolic link resolved, or nil.
    func realPath(_ path: String) -> String?
    /// Every gid the uid's account may take on (its primary group and supplementary groups:
    /// newgrp and sg switch to any of them).
    func groups(ofUID uid: UInt32) -> Set<UInt32>
    /// kernel.yama.ptrace_scope (0 without Yama): at 0 any process may trace others of its uid.
    var ptraceScope: Int { get }
}

public struct FileFacts: Sendable, Equatable {
    public var id: FileID
    public var owner: UInt32
    public var mode: UInt32
    public var isRegular: Bool
    public var isDirectory: Bool

    public init(id: FileID, owner: UInt32, mode: UInt32, isRegular: Bool, isDirectory: Bool) {
        self.id = id
        self.owner = owner
        self.mode = mode
        self.isRegular = isRegular
        self.isDirectory = isDirectory
    }

    /// Only root can change it: root-owned and neither group- nor world-writable.
    public var onlyRootWrites: Bool { owner == 0 && mode & 0o022 == 0 }

    /// Who other than root can write it, in words (nil when only root can).
    public var otherWriters: String? {
        if owner != 0 { return "its owner, uid \(owner)" }
        if mode & 0o002 != 0 { return "every user" }
        if mode & 0o020 != 0 { return "its group" }
        return nil
    }
}

/// Checks at policy load what the parser cannot see: whether each selector means what it
/// says against code running as the agent's own uid (DESIGN.md section 10, invariant 12).
/// Errors refuse the policy; warnings are logged and shown by `lanyardctl policy validate`.
public enum SelectorReview {
    public static func review(_ policy: Policy, file: String, host: some HostFacts) -> (errors: [PolicyError], warnings: [PolicyError]) {
        var errors: [PolicyError] = [], warnings: [PolicyError] = []
        func finding(_ agent: Agent, _ field: String, _ message: String) -> PolicyError {
            PolicyError(file: file, path: field.isEmpty ? "agents.\(agent.name)" : "agents.\(agent.name).\(field)",
                        line: agent.lines[field] ?? agent.lines[""], message: message)
        }
        for agent in policy.agents {
            if let exe = agent.selector.exe, let problem = exeProblem(exe, host: host) {
                errors.append(finding(agent, "exe", problem))
            }
            if case .user(let name)? = agent.selector.unit {
                warnings.append(finding(agent, "user_unit", "'\(name)' is a unit of uid \(agent.selector.uid)'s own user manager: that uid creates any cgroup there, so this selector does not tell its processes apart"))
            }
        }
        for (uid, agents) in Dictionary(grouping: policy.agents, by: \.selector.uid).sorted(by: { $0.key < $1.key }) where agents.count > 1 {
            for (i, a) in agents.enumerated() {
                for b in agents[(i + 1)...] {
                    let weak = weakDifferences(a.selector, b.selector, host: host)
                    guard !weak.isEmpty else { continue }
                    warnings.append(finding(b, "", "runs as uid \(uid) like agent '\(a.name)' and is told apart from it only by \(weak.joined(separator: " and ")): code running as uid \(uid) can pass as either; give each agent its own uid"))
                }
            }
        }
        return (errors, warnings)
    }

    /// Why `exe` pins nothing (nil when it does): the file, and every directory on the way
    /// to it, must be writable by root alone, or someone else can put other code there.
    static func exeProblem(_ exe: String, host: some HostFacts) -> String? {
        guard let file = host.file(exe), file.isRegular else {
            return "\(exe) is not an existing regular file; install the binary first (root-owned, mode 0755)"
        }
        let real = host.realPath(exe) ?? exe
        if let who = file.otherWriters {
            return "\(real) is writable by \(who), who can put other code in it; make it root-owned and not group- or world-writable (chown root: \(real); chmod go-w \(real))"
        }
        for path in Set([exe, real]).sorted() {
            var dir = path
            while let slash = dir.lastIndex(of: "/") {
                dir = slash == dir.startIndex ? "/" : String(dir[..<slash])
                guard let d = host.file(dir) else { return "\(dir) cannot be read" }
                // A sticky directory (/tmp) lets no one else rename or remove root's entries.
                if let who = d.otherWriters, !(d.mode & 0o1000 != 0 && d.owner == 0) {
                    return "directory \(dir) is writable by \(who), who can replace \(path); move the binary to a directory only root can write"
                }
                if dir == "/" { break }
            }
        }
        return nil
    }

    /// The selectors that tell `a` and `b` apart, when code running as their uid can
    /// defeat every one of them (empty when one of them holds).
    static func weakDifferences(_ a: Selector, _ b: Selector, host: some HostFacts) -> [String] {
        var weak: [String] = []
        if a.exe != b.exe { weak.append("exe (it can run the other's binary with LD_PRELOAD or under ptrace)") }
        if a.exeSHA256 != b.exeSHA256 { weak.append("exe_sha256 (it can run the other's binary with LD_PRELOAD or under ptrace)") }
        if a.gid != b.gid {
            let reachable = host.groups(ofUID: a.uid)
            guard [a.gid, b.gid].compactMap({ $0 }).contains(where: reachable.contains) else { return [] }
            weak.append("gid (the uid's account is in that group: newgrp switches to it)")
        }
        if a.unit != b.unit {
            switch (a.unit, b.unit) {
            case (.user?, _), (_, .user?):
                weak.append("a user unit (its user manager is the uid's own)")
            default:
                guard host.ptraceScope == 0 else { return [] }
                weak.append("unit (kernel.yama.ptrace_scope is 0: it can trace the unit's processes)")
            }
        }
        return weak
    }
}

/// The real host, read with plain system calls.
public struct LocalHost: HostFacts {
    public init() {}

    public func file(_ path: String) -> FileFacts? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let type = st.st_mode & S_IFMT
        return FileFacts(id: FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)), owner: st.st_uid, mode: UInt32(st.st_mode & 0o7777),
                         isRegular: type == S_IFREG, isDirectory: type == S_IFDIR)
    }

    public func realPath(_ path: String) -> String? {
        guard let p = Glibc.realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    public func groups(ofUID uid: UInt32) -> Set<UInt32> {
        guard let pw = getpwuid(uid) else { return [] }
        var count: Int32 = 64
        var gids = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &gids, &count) < 0 {
            gids = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &gids, &count)
        }
        return Set(gids.prefix(Int(max(0, count))))
    }

    public var ptraceScope: Int {
        guard let fp = fopen("/proc/sys/kernel/yama/ptrace_scope", "r") else { return 0 }
        defer { fclose(fp) }
        var buf = [CChar](repeating: 0, count: 16)
        guard fgets(&buf, Int32(buf.count), fp) != nil else { return 0 }
        return Int(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).filter(\.isNumber)) ?? 0
    }
}
