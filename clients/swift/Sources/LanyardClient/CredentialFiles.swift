#if canImport(Glibc)
import Glibc
#endif

/// Credentials handed to a child process as files, the way systemd does it: a private
/// mode-0700 directory (`$CREDENTIALS_DIRECTORY`) holding one mode-0600 file per
/// credential, removed when the child is done. Used by `lanyardctl exec` and `lanyard-mcp`.
public enum CredentialFiles {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// A new mode-0700 directory named `prefix.XXXXXX`, in memory where the system has it:
    /// under `$XDG_RUNTIME_DIR` when that is a real directory of this user's that no one else
    /// can enter (systemd's per-user tmpfs), else /dev/shm (tmpfs, sticky), else /tmp. The
    /// directory made is checked to be this user's, mode 0700, not a link.
    public static func makePrivateDirectory(prefix: String) throws -> String {
        let runtime = getenv("XDG_RUNTIME_DIR").map { String(cString: $0) }
        let base = runtime.flatMap { isPrivateDirectory($0) ? $0 : nil } ?? (isDirectory("/dev/shm") ? "/dev/shm" : "/tmp")
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw Failure(description: "cannot create a private directory under \(base): \(String(cString: strerror(errno)))")
        }
        let dir = String(cString: made)
        guard isPrivateDirectory(dir) else {
            rmdir(dir)
            throw Failure(description: "the private directory \(dir) is not this user's with mode 0700 after it was made; not using it")
        }
        return dir
    }

    /// A directory (not a link) owned by this user that only this user can enter.
    static func isPrivateDirectory(_ path: String) -> Bool {
        var st = stat()
        guard path.hasPrefix("/"), lstat(path, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFDIR && st.st_uid == geteuid() && st.st_mode & 0o077 == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// The names in an open directory stream, without `.` and `..`.
    public static func entryNames(_ dir: OpaquePointer) -> [String] {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Whether `name` can be a credential file's name: one path component, not `.` or `..`.
    public static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("/") && name != "." && name != ".." && !name.utf8.contains(0)
    }

    /// Writes a secret to a new file (mode 0600, never through a symlink, never over a file).
    public static func writeSecret(_ secret: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "cannot create credential file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(secret.utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw Failure(description: "cannot write credential file \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes the directory and the files in it (not recursive: it holds files only), through
    /// the directory's own descriptor: a directory swapped for a link is not followed.
    public static func removeDirectory(_ dir: String) {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd >= 0, let d = fdopendir(fd) {
            for name in entryNames(d) { unlinkat(dirfd(d), name, 0) }
            closedir(d)  // closes fd
        } else if fd >= 0 {
            close(fd)
        }
        rmdir(dir)
    }
}
