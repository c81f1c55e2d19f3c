/// Text from agents made inert for the humans who read it (DESIGN.md section 10,
/// invariant 14): in lanyardctl's views, the daemon's log, webhook bodies. One
/// definition of what is dangerous, used everywhere.
public enum Inert {
    /// How many bytes of a shown field are kept by default.
    public static let defaultLimit = 512

    /// `s` with every dangerous scalar escaped visibly — `\n`, `\r`, `\t`, `\x1b`,
    /// `\u{202e}` — and `\` doubled so that no escape can be faked; cut once the
    /// result would pass `limit` bytes, with a marker `…[+N bytes]` naming the bytes
    /// of `s` left out.
    public static func text(_ s: String, limit: Int = defaultLimit) -> String {
        render(s, limit: limit, quoting: false)
    }

    /// `text(s)` between double quotes, with `"` escaped: a field that cannot run into
    /// the next one.
    public static func quoted(_ s: String, limit: Int = defaultLimit) -> String {
        "\"" + render(s, limit: limit, quoting: true) + "\""
    }

    /// A field among others on one line: `s` as it is when it is a plain token
    /// (letters, digits and `._:/@+-`, within `limit`), else `quoted(s)`.
    public static func field(_ s: String, limit: Int = defaultLimit) -> String {
        let plain = !s.isEmpty && s.utf8.count <= limit && s.utf8.allSatisfy { b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || "._:/@+-".utf8.contains(b)
        }
        return plain ? s : quoted(s, limit: limit)
    }

    /// `s` unchanged if it has at most `limit` bytes of UTF-8; else cut at a scalar
    /// boundary and ended with `…[+N bytes]`, all within `limit` bytes. For storage,
    /// which keeps text exact but bounded.
    public static func capped(_ s: String, limit: Int) -> String {
        let total = s.utf8.count
        guard total > limit else { return s }
        var kept = ""
        var used = 0
        let room = max(0, limit - marker(total).utf8.count)
        for u in s.unicodeScalars {
            let n = UTF8.width(u)
            if used + n > room { break }
            kept.unicodeScalars.append(u)
            used += n
        }
        return kept + marker(total - used)
    }

    /// Whether `u` must never reach a terminal or a log as itself: controls (C0, DEL,
    /// C1), line and paragraph separators, and format characters (bidi embeddings,
    /// overrides and isolates, zero-width characters, the BOM, tags).
    public static func mustEscape(_ u: Unicode.Scalar) -> Bool {
        switch u.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate: true
        default: false
        }
    }

    private static func render(_ s: String, limit: Int, quoting: Bool) -> String {
        var out = ""
        var used = 0
        var consumed = 0
        for u in s.unicodeScalars {
            let piece = escaped(u, quoting: quoting)
            if used + piece.utf8.count > limit {
                return out + marker(s.utf8.count - consumed)
            }
            out += piece
            used += piece.utf8.count
            consumed += UTF8.width(u)
        }
        return out
    }

    private static func escaped(_ u: Unicode.Scalar, quoting: Bool) -> String {
        switch u {
        case "\\": return "\\\\"
        case "\"" where quoting: return "\\\""
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        case _ where !mustEscape(u): return String(u)
        case _ where u.value < 0x100:
            let hex = String(u.value, radix: 16)
            return "\\x" + (hex.count < 2 ? "0" : "") + hex
        default:
            return "\\u{" + String(u.value, radix: 16) + "}"
        }
    }

    private static func marker(_ bytes: Int) -> String { "…[+\(bytes) bytes]" }
}
