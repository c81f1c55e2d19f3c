import LanyardCore
import Testing

/// Invariant 14: what `Inert` makes of hostile text, scalar class by scalar class.
struct InertTests {
    @Test(arguments: [
        ("plain text, kept", "github:read_repo on docs-site", "github:read_repo on docs-site"),
        ("ESC sequences", "\u{1B}7\u{1B}[2A\u{1B}[2Kgithub", "\\x1b7\\x1b[2A\\x1b[2Kgithub"),
        ("CR and LF", "a\r\n999999  allow", "a\\r\\n999999  allow"),
        ("tab", "a\tb", "a\\tb"),
        ("NUL and BEL", "a\u{0}b\u{7}", "a\\x00b\\x07"),
        ("DEL", "a\u{7F}b", "a\\x7fb"),
        ("C1: CSI and NEL", "a\u{9B}2Jb\u{85}", "a\\x9b2Jb\\x85"),
        ("bidi override and isolates", "\u{202E}exe.txt\u{2066}x\u{2069}", "\\u{202e}exe.txt\\u{2066}x\\u{2069}"),
        ("every bidi embedding", "\u{202A}\u{202B}\u{202C}\u{202D}", "\\u{202a}\\u{202b}\\u{202c}\\u{202d}"),
        ("zero-width, BOM, ALM", "a\u{200B}\u{200D}\u{FEFF}\u{061C}b", "a\\u{200b}\\u{200d}\\u{feff}\\u{61c}b"),
        ("line and paragraph separators", "a\u{2028}b\u{2029}", "a\\u{2028}b\\u{2029}"),
        ("tag characters", "a\u{E0041}", "a\\u{e0041}"),
        ("a backslash cannot fake an escape", "\\x1b", "\\\\x1b"),
        ("letters of other scripts stay", "naïve 日本語 ü", "naïve 日本語 ü"),
    ])
    func escapes(_ kind: String, _ input: String, _ expected: String) {
        #expect(Inert.text(input) == expected, "\(kind)")
        #expect(Inert.text(input).unicodeScalars.allSatisfy { !Inert.mustEscape($0) }, "\(kind)")
    }

    @Test(arguments: [
        ("plain", "abc", 10, "abc"),
        ("cut with the bytes left out", "abcdefghij", 4, "abcd…[+6 bytes]"),
        ("an escape is never split", "ab\u{1B}cd", 4, "ab…[+3 bytes]"),
        ("a scalar is never split", "ééé", 5, "éé…[+2 bytes]"),
    ])
    func capsTheShownText(_ kind: String, _ input: String, _ limit: Int, _ expected: String) {
        #expect(Inert.text(input, limit: limit) == expected, "\(kind)")
    }

    @Test func sixtyKilobytesAreCutToTheLimitWithAMarker() {
        let shown = Inert.text(String(repeating: "\u{1B}[2A", count: 15_000), limit: 512)
        #expect(shown.utf8.count <= 512 + "…[+60000 bytes]".utf8.count)
        #expect(shown.hasSuffix(" bytes]") && shown.hasPrefix("\\x1b[2A"))
    }

    @Test(arguments: [
        ("a token stays bare", "github:read_repo", "github:read_repo"),
        ("spaces are quoted", "deploy  allow", "\"deploy  allow\""),
        ("quotes inside are escaped", "a\"b", "\"a\\\"b\""),
        ("empty is visible", "", "\"\""),
        ("controls are escaped inside the quotes", "x\ny", "\"x\\ny\""),
    ])
    func fields(_ kind: String, _ input: String, _ expected: String) {
        #expect(Inert.field(input) == expected, "\(kind)")
    }

    @Test(arguments: [
        ("short text is kept exactly", "a\u{1B}b", 1, 10, "a\u{1B}b"),
        ("long text is cut within the limit", "x", 50_000, 2048, nil as String?),
        ("a scalar is never split", "é", 2000, 2048, nil as String?),
    ])
    func capsStoredText(_ kind: String, _ unit: String, _ count: Int, _ limit: Int, _ expected: String?) throws {
        let input = String(repeating: unit, count: count)
        let capped = Inert.capped(input, limit: limit)
        if let expected { #expect(capped == expected, "\(kind)") }
        #expect(capped.utf8.count <= limit, "\(kind): \(capped.utf8.count) bytes")
        if input.utf8.count > limit {
            // The marker names exactly the bytes left out of what was kept.
            let marker = try #require(capped.range(of: "…[+"))
            let kept = String(capped[..<marker.lowerBound])
            let left = Int(capped[marker.upperBound...].prefix { $0.isNumber })
            #expect(input.hasPrefix(kept) && kept.utf8.count + (left ?? -1) == input.utf8.count, "\(kind)")
        }
    }

    @Test func jsonIsExactAndInert() {
        let hostile = "a\u{1B}[2A\u{7F}\u{9B}\u{202E}\u{E0041}\n\"\\"
        let text = JSON.string(hostile).text
        #expect(text == "\"a\\u001b[2A\\u007f\\u009b\\u202e\\udb40\\udc41\\n\\\"\\\\\"")
        #expect(text.unicodeScalars.allSatisfy { !Inert.mustEscape($0) })
    }

    @Test func auditFieldsAreCappedSoARecordAlwaysFitsAPage() {
        var r = AuditRecord(event: "authorize")
        r.capability = String(repeating: "\u{1B}", count: 50_000)
        r.reason = "capability '\(r.capability)' is malformed"
        let capped = r.capped
        #expect(capped.capability.utf8.count <= AuditRecord.maxFieldBytes && capped.reason.utf8.count <= AuditRecord.maxFieldBytes)
        #expect(capped.event == "authorize")
        // 14 text fields at the cap stay well inside the 48 KiB reply budget.
        #expect(14 * AuditRecord.maxFieldBytes + 200 < 48 * 1024)
    }
}
