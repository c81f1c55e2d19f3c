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

    /// A new mode-0700 directory under `$XDG_RUNTIME_DIR` (else /tmp), named `prefix.XXXXXX`.
    public static func makePrivateDirectory(prefix: String) throws -> String {
        let base = getenv("XDG_RUNTIME_DIR").map { String(cString: $0) }.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw Failure(description: "cannot create a private directory under \(base): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
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

    /// Removes the directory and the files in it (not recursive: it holds files only).
    public static func removeDirectory(_ dir: String) {
        if let d = opendir(dir) {
            var names: [String] = []
            while let entry = readdir(d) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(d)
            for name in names { unlink(dir + "/" + name) }
        }
        rmdir(dir)
    }
}
