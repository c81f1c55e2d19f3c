#if canImport(Glibc)
import Glibc
#endif

/// Files and directories whose contents decide what lanyardd trusts (the policy, the
/// state dir, the socket dir, key and credential files). Another local user must not be
/// able to write them, replace them, or redirect lanyardd's privileged writes through a
/// link planted in them: owned by root or the daemon's user, writable by no one else.
public enum TrustedPath {
    /// Why a file or directory with `st` is not safe to trust, or nil.
    static func problem(_ st: stat, _ path: String, what: String, sticky: Bool = false) -> String? {
        let mode = st.st_mode & 0o7777
        if st.st_uid != 0 && st.st_uid != geteuid() {
            return "\(what) \(path) is owned by uid \(st.st_uid), neither root nor the daemon's uid \(geteuid()); chown it to root or the daemon's user"
        }
        let sharedWrite = mode & 0o022 != 0
        if sharedWrite && !(sticky && mode & mode_t(S_ISVTX) != 0) {
            return "\(what) \(path) is writable by group or others (mode \(String(mode, radix: 8))); run: chmod go-w \(path)"
        }
        return nil
    }

    /// Refuses a directory another user could write (a sticky one like /tmp is allowed when
    /// `sticky`: others cannot remove or rename what lanyardd creates there).
    public static func checkDirectory(_ path: String, what: String, sticky: Bool = false) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw StartupError("\(what) \(path) cannot be read: \(errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw StartupError("\(what) \(path) is not a directory") }
        if let problem = problem(st, path, what: what, sticky: sticky) { throw StartupError(problem) }
    }

    /// Reads a trusted text file: the file itself and the directory that holds it must pass
    /// `problem`; a secret must also not be readable by others. Symlinks are followed (config
    /// management uses them) and the file they lead to is checked, with its directory.
    public static func read(_ path: String, what: String, limit: Int, secret: Bool = false) throws -> String {
        try checkDirectory(parent(of: path), what: "the directory of \(what)", sticky: true)
        if let resolved = realpath(path, nil) {
            let real = String(cString: resolved)
            free(resolved)
            if real != path { try checkDirectory(parent(of: real), what: "the directory of \(what)", sticky: true) }
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StartupError("\(what) \(path) cannot be opened: \(errnoText())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw StartupError("\(what) \(path) is not a regular file") }
        if let problem = problem(st, path, what: what) { throw StartupError(problem) }
        if secret && st.st_mode & 0o007 != 0 {
            throw StartupError("\(what) \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod o-rwx \(path)")
        }
        guard let text = readAll(fd, limit: limit) else { throw StartupError("\(what) \(path) cannot be read: \(errnoText())") }
        return text
    }

    /// Refuses a program another user could replace (a notification command): the file a
    /// symlink leads to must be a regular, executable file passing `problem`, in directories
    /// that pass it too.
    public static func checkProgram(_ path: String, what: String) throws {
        try checkDirectory(parent(of: path), what: "the directory of \(what)", sticky: true)
        guard let resolved = realpath(path, nil) else { throw StartupError("\(what) \(path) cannot be found: \(errnoText())") }
        let real = String(cString: resolved)
        free(resolved)
        if real != path { try checkDirectory(parent(of: real), what: "the directory of \(what)", sticky: true) }
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(real, X_OK) == 0 else {
            throw StartupError("\(what) \(path) is not an executable file")
        }
        if let problem = problem(st, real, what: what) { throw StartupError(problem) }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
