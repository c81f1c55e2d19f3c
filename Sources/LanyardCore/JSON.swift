/// A minimal JSON writer: CLI `--json` output (numbers stay numbers, unlike proto3 JSON's
/// int64) and JWT headers and claims. Keys keep their order.
public enum JSON: Sendable {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case array([JSON])
    case object([(String, JSON)])
    case null

    public var text: String {
        switch self {
        case .string(let s): return Self.quote(s)
        case .int(let n): return String(n)
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array(let items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .object(let pairs): return "{" + pairs.map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            // Exact JSON whose bytes are inert too (invariant 14): controls, C1, bidi and
            // other format characters as \u escapes, which decode to the same string.
            case _ where Inert.mustEscape(u):
                for unit in String(u).utf16 {
                    let hex = String(unit, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

