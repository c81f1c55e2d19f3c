import LanyardCore
import Testing

/// `JSON.read`, the reader for untrusted JSON (JWS headers and claims; Security II
/// finding 7): one pass, bounded depth, integers only, strict where JOSE was bitten.
struct JSONReaderTests {
    func read(_ text: String, maxDepth: Int = 4) throws(JSONReadError) -> JSON { try JSON.read(Array(text.utf8), maxDepth: maxDepth) }

    func refusal(_ text: String, maxDepth: Int = 4) -> JSONReadError? {
        do { _ = try read(text, maxDepth: maxDepth); return nil } catch { return error }
    }

    @Test func readsWhatItWrites() throws {
        let value = JSON.object([("s", .string("a\"b\\c\n\u{1}é😀")), ("n", .int(-42)), ("max", .int(.max)), ("min", .int(.min)),
                                 ("t", .bool(true)), ("f", .bool(false)), ("z", .null), ("a", .array([.int(0), .array([])])), ("o", .object([]))])
        #expect(try read(value.text).text == value.text)
        #expect(try read(#" { "k" : [ 1 , "\u00e9\ud83d\ude00\/" ] } "#)[member: "k"]?.text == #"[1,"é😀/"]"#)
    }

    /// The work done on a hostile input is bounded by where it is refused: a megabyte of
    /// brackets is refused at the first level too deep, having read no further.
    @Test func nestingIsRefusedWhereItGoesTooDeep() {
        let hostile = String(repeating: "[", count: 1 << 20)
        #expect(refusal(hostile, maxDepth: 16)?.description == "nested deeper than 16 at byte 16")
        #expect(refusal(String(repeating: #"{"a":"#, count: 1000) + "1" + String(repeating: "}", count: 1000), maxDepth: 3)?.description
                == "nested deeper than 3 at byte 15")
        #expect((try? read("[[[1]]]", maxDepth: 3)) != nil)
        #expect(refusal("[[[[1]]]]", maxDepth: 3)?.offset == 3)
    }

    /// Numbers are integers that fit in 64 bits: nothing is ever converted from a Double.
    @Test(arguments: [
        ("1e300", "a number that is not an integer"), ("-1e300", "a number that is not an integer"), ("1.0", "a number that is not an integer"),
        ("9223372036854775808", "a number out of the 64-bit integer range"), ("-9223372036854775809", "a number out of the 64-bit integer range"),
        ("18446744073709551616", "a number out of the 64-bit integer range"), ("01", "a number has a leading zero"), ("-", "a number needs digits"),
        ("+1", "not a JSON value"), ("NaN", "not a JSON value"), ("Infinity", "not a JSON value"),
    ])
    func numbersAreCheckedIntegers(text: String, reason: String) {
        #expect(refusal(text)?.reason == reason)
    }

    @Test(arguments: [
        (#"{"a":1,"a":2}"#, "duplicate member name"), (#""\ud800""#, "a lone surrogate"), (#""\udc00x""#, "a lone surrogate"),
        ("\"\u{1}\"", "a control character in a string"), (#""\x""#, "an invalid escape"), ("[1,]", "not a JSON value"), ("[1 2]", "expected ']'"),
        (#"{"a" 1}"#, "expected ':'"), ("{1:2}", "expected a member name"), ("1 1", "trailing bytes after the value"), ("", "unexpected end"),
        (#""abc"#, "unterminated string"), ("tru", "not a JSON value"), (#""\u12"#, "a short \u{5C}u escape"),
    ])
    func malformedInputIsRefusedWithTheReason(text: String, reason: String) {
        #expect(refusal(text)?.reason == reason)
    }

    /// MCP tool arguments (issue 17): any RFC 8259 number, kept as written, never converted.
    @Test func numbersAsWrittenFollowTheGrammar() throws {
        for text in ["0", "-0", "12", "-1.50", "1e300", "2E-7", "0.0e+0", "123456789012345678901234567890"] {
            guard case .number(let n) = try JSON.read(Array(text.utf8), maxDepth: 1, numbers: .asWritten) else {
                Issue.record("\(text) was not read as a number")
                continue
            }
            #expect(n == text)
        }
        for (text, reason) in [("01", "a number has a leading zero"), ("1.", "a number needs digits"), ("1e", "a number needs digits"),
                               ("-", "a number needs digits"), (".5", "not a JSON value"), ("+1", "not a JSON value"), ("1.5.2", "trailing bytes after the value")] {
            #expect(throws: JSONReadError.self, "\(text)") { try JSON.read(Array(text.utf8), maxDepth: 1, numbers: .asWritten) }
            do { _ = try JSON.read(Array(text.utf8), maxDepth: 1, numbers: .asWritten) } catch { #expect(error.reason == reason, "\(text)") }
        }
    }

    @Test func invalidUTF8IsRefused() {
        #expect(throws: JSONReadError.self) { try JSON.read([0x22, 0xC3, 0x28, 0x22], maxDepth: 1) }
        #expect(throws: JSONReadError.self) { try JSON.read([0x22, 0xED, 0xA0, 0x80, 0x22], maxDepth: 1) }  // an encoded surrogate
    }

    /// Member names and `sameBytes` compare bytes, never canonical equivalence.
    @Test func namesCompareByTheirBytes() throws {
        let o = try read(#"{"caf\u00e9":1,"cafe\u0301":2}"#)
        #expect(o[member: "caf\u{E9}"]?.text == "1" && o[member: "cafe\u{301}"]?.text == "2")
        #expect("\u{212A}" == "K" && !"\u{212A}".sameBytes(as: "K") && "K".sameBytes(as: "K"))
    }
}
