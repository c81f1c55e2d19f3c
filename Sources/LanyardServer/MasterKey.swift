#if canImport(Glibc)
import Glibc
#endif

/// Loads the 256-bit master key that seals secrets and signing keys. Refuses, with one
/// line saying which rule failed, a key that is missing, the wrong length, readable by
/// group or others, not owned by the daemon's user, or a symlink.
public enum MasterKey {
    public static let size = 32

    /// `path` from --master-key-file, else `$CREDENTIALS_DIRECTORY/master.key` (systemd).
    public static func load(path: String?) throws -> [UInt8] {
        let file: String
        if let path {
            file = path
        } else if let dir = Systemd.credentialsDirectory {
            file = dir + "/master.key"
        } else {
            throw StartupError("no master key: pass --master-key-file FILE (create one with `lanyardd keygen --out FILE`), or run under systemd with LoadCredential=master.key")
        }
        var st = stat()
        guard lstat(file, &st) == 0 else {
            throw StartupError("master key \(file) cannot be read: \(errnoText()); create one with `lanyardd keygen --out \(file)`")
        }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            throw StartupError("master key \(file) is a symlink; point --master-key-file at the real file")
        }
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw StartupError("master key \(file) cannot be opened: \(errnoText())") }
        defer { close(fd) }
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw StartupError("master key \(file) is not a regular file")
        }
        if st.st_mode & 0o077 != 0 {
            throw StartupError("master key \(file) is accessible to group or others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod 600 \(file)")
        }
        if st.st_uid != geteuid() {
            throw StartupError("master key \(file) is owned by uid \(st.st_uid), not the daemon's uid \(geteuid()); chown it to the daemon's user")
        }
        guard st.st_size == off_t(size) else {
            throw StartupError("master key \(file) must be exactly \(size) bytes, it has \(st.st_size); create one with `lanyardd keygen --out FILE`")
        }
        var key = [UInt8](repeating: 0, count: size)
        guard read(fd, &key, size) == size else { throw StartupError("master key \(file) could not be read: \(errnoText())") }
        return key
    }

    /// Writes a new random key file (mode 0600); the file must not exist.
    public static func generate(at path: String, bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StartupError("cannot create \(path): \(errnoText()) (it must not exist yet)") }
        defer { close(fd) }
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            let e = errnoText()
            unlink(path)
            throw StartupError("cannot write \(path): \(e)")
        }
        // The new name is durable only once its folder is.
        let folder = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw StartupError("cannot open \(folder) to make \(path) durable: \(errnoText())") }
        defer { close(dir) }
        guard fsync(dir) == 0 else { throw StartupError("cannot make \(path) durable (fsync of \(folder)): \(errnoText())") }
    }
}
