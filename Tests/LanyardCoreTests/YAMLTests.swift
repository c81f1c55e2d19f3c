import LanyardCore
import Testing

/// The composer over libyaml that the policy, its test files and the config file are read with.
struct YAMLTests {
    @Test func composesMappingsListsAndScalarsWithTheirLines() throws {
        let root = try #require(try YAML.compose("a: 1\nb:\n  - x\n  - { c: 'q' }\n"))
        let top = try #require(root.mapping)
        #expect(top.keys.map(\.string) == ["a", "b"])
        #expect(top["a"]?.int == 1)
        #expect(top["a"]?.mark?.line == 1)
        #expect(top["a"]?.mark?.column == 4)
        let list = try #require(top["b"]?.sequence)
        #expect(list.items.count == 2)
        #expect(list.items[0].string == "x")
        #expect(list.items[1].mapping?["c"]?.string == "q")
        #expect(list.items[1].mark?.line == 4)
    }

    @Test func anEmptyStreamHasNoDocument() throws {
        #expect(try YAML.compose("") == nil)
        #expect(try YAML.compose("# only a comment\n") == nil)
    }

    /// For every reader: the config file and test files as much as the policy.
    @Test func aKeyGivenTwiceIsRefused() {
        #expect {
            try YAML.compose("a: 1\nb: 2\na: 3\n")
        } throws: { error in
            (error as? YAMLError).map { $0.problem.contains("'a' is defined twice") && $0.line == 3 } ?? false
        }
        #expect(throws: Never.self) { try YAML.compose("a: { x: 1 }\nb: { x: 1 }\n") }  // the same key in two mappings
        // Canonically equivalent keys (é precomposed, and e + combining acute) look alike: refused as one.
        #expect(throws: YAMLError.self) { try YAML.compose("\u{E9}: 1\ne\u{301}: 2\n") }
    }

    @Test func malformedYAMLSaysWhatAndWhere() {
        #expect {
            try YAML.compose("a: 1\nb: [unclosed\nc: 3\n")
        } throws: { error in
            guard let e = error as? YAMLError else { return false }
            return e.line != nil && !e.problem.isEmpty
        }
        #expect(throws: YAMLError.self) { try YAML.compose("a: 1\n--- \nb: 2\n") }  // one document only
        #expect(throws: YAMLError.self) { try YAML.compose("a: *nowhere\n") }
        #expect(throws: YAMLError.self) { try YAML.compose("a: \"\\xff\"\n\u{0}") }
    }

    @Test func aliasesRepeatTheirAnchor() throws {
        let m = try #require(try YAML.compose("base: &b { uid: 7 }\nother: *b\n")?.mapping)
        #expect(m["other"]?.mapping?["uid"]?.int == 7)
    }

    /// A "billion laughs" document: nine levels of ten aliases each would have the
    /// readers walk 10^9 nodes; it is refused once the expansion passes the bound.
    @Test func aliasExpansionIsBounded() {
        var text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 {
            text += "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        #expect {
            try YAML.compose(text)
        } throws: { error in
            (error as? YAMLError)?.problem.contains("expands to more than") == true
        }
    }

    /// Trees are walked and freed recursively: nesting is bounded, and composed without recursion up to the bound.
    @Test func nestingIsBounded() throws {
        func nested(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }
        #expect(try YAML.compose(nested(YAML.maxDepth))?.sequence != nil)
        // Aliases nest what they repeat where they stand: a chain of deep anchors is as deep as its expansion.
        let deep = String(repeating: "[", count: 200) + "x" + String(repeating: "]", count: 200)
        #expect {
            try YAML.compose("a: &a \(deep)\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n")
        } throws: { error in
            (error as? YAMLError)?.problem.contains("through alias *a") == true
        }
        #expect {
            try YAML.compose(nested(100_000))
        } throws: { error in
            (error as? YAMLError)?.problem.contains("nested deeper than") == true
        }
    }

    @Test(arguments: [
        ("1001", 1001), ("-5", -5), ("+5", 5), ("0x1f", 31), ("0o17", 15), ("0b101", 5), ("1_000", 1000), ("0", 0),
        ("0x0b11", 2833), ("0x0b", 11),
    ])
    func wholeNumbers(text: String, value: Int) throws {
        #expect(try YAML.compose("v: \(text)")?.mapping?["v"]?.int == value)
    }

    /// `0755` was octal in YAML 1.1: not read as 755 now, so such a policy does not load.
    @Test(arguments: ["1.5", "abc", "0x", "", "12a", "99999999999999999999", "0755", "01000", "-012", "1:30", "0o0x1"])
    func notWholeNumbers(text: String) throws {
        #expect(try YAML.compose("v: \(text)")?.mapping?["v"]?.int == nil)
    }

    @Test func booleans() throws {
        let m = try #require(try YAML.compose("a: true\nb: No\nc: ON\nd: maybe\n")?.mapping)
        #expect(m["a"]?.bool == true)
        #expect(m["b"]?.bool == false)
        #expect(m["c"]?.bool == true)
        #expect(m["d"]?.bool == nil)
    }
}
