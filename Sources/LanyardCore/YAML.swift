import CYAML

/// A YAML document as a tree, composed from libyaml's events: what the policy, its
/// test files and the daemon's config file are read from. Scalars keep their text;
/// the readers decide what a value means where they expect one (`bool`, `int`).
public indirect enum YAMLNode: Sendable {
    case scalar(Scalar)
    case mapping(Mapping)
    case sequence(List)

    /// Where a node starts in its file: 1-based line and column.
    public struct Mark: Sendable, Equatable {
        public var line: Int
        public var column: Int
    }

    public struct Scalar: Sendable {
        public var string: String
        public var mark: Mark
    }

    /// A mapping's pairs in the file's order (duplicates are the reader's to refuse).
    public struct Mapping: Sendable, Sequence {
        public var pairs: [(YAMLNode, YAMLNode)]
        public var mark: Mark
        public func makeIterator() -> IndexingIterator<[(YAMLNode, YAMLNode)]> { pairs.makeIterator() }
        public var keys: [YAMLNode] { pairs.map(\.0) }
        /// The value of the first key whose text is `key`.
        public subscript(key: String) -> YAMLNode? { pairs.first { $0.0.string == key }?.1 }
    }

    public struct List: Sendable, Sequence {
        public var items: [YAMLNode]
        public var mark: Mark
        public func makeIterator() -> IndexingIterator<[YAMLNode]> { items.makeIterator() }
        public var isEmpty: Bool { items.isEmpty }
    }

    public var mark: Mark? {
        switch self {
        case .scalar(let s): s.mark
        case .mapping(let m): m.mark
        case .sequence(let l): l.mark
        }
    }

    public var scalar: Scalar? { if case .scalar(let s) = self { s } else { nil } }
    public var mapping: Mapping? { if case .mapping(let m) = self { m } else { nil } }
    public var sequence: List? { if case .sequence(let l) = self { l } else { nil } }
    public var string: String? { scalar?.string }

    /// YAML 1.1's booleans: true/false, yes/no, on/off, in any case.
    public var bool: Bool? {
        switch string?.lowercased() {
        case "true", "yes", "on": true
        case "false", "no", "off": false
        default: nil
        }
    }

    /// A whole number: decimal with an optional sign, or 0x/0o/0b; `_` may group digits.
    /// A decimal with a leading zero (`0755`) is none: YAML 1.1 (and Yams before this
    /// reader) read it as octal, so a policy written for that reading fails to load
    /// rather than name other uids.
    public var int: Int? {
        guard var s = string.map({ Substring($0) }) else { return nil }
        s.removeAll { $0 == "_" }
        var negative = false
        if let sign = s.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            s = s.dropFirst()
        }
        let radix: Int
        switch s.prefix(2) {
        case "0x": radix = 16
        case "0o": radix = 8
        case "0b": radix = 2
        default: radix = 10
        }
        if radix != 10 { s = s.dropFirst(2) }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isHexDigit }), radix != 10 || !Self.hasLeadingZero(s),
              let magnitude = Int(s, radix: radix) else { return nil }
        return negative ? -magnitude : magnitude
    }
}

extension YAMLNode {
    /// A decimal written with a leading zero (`0755`, `-012`): what YAML 1.1 read as octal.
    public var hasLeadingZero: Bool {
        guard var s = string.map({ Substring($0) }) else { return false }
        if s.first == "-" || s.first == "+" { s = s.dropFirst() }
        return Self.hasLeadingZero(s)
    }

    static func hasLeadingZero(_ digits: Substring) -> Bool {
        digits.count > 1 && digits.first == "0" && digits.dropFirst().first?.isNumber == true
    }
}

/// A document that is not valid YAML: libyaml's words and the line it stopped at.
public struct YAMLError: Error, Sendable, CustomStringConvertible {
    public var problem: String
    public var line: Int?
    public var description: String { line.map { "line \($0): \(problem)" } ?? problem }
}

public enum YAML {
    /// Aliases may repeat a subtree anywhere; the whole tree as the readers walk it
    /// (aliases expanded) is bounded, so a small file cannot make them walk billions of nodes.
    public static let maxExpandedNodes = 2_000_000
    /// Trees are walked (and freed) recursively: their depth is bounded well inside a thread's stack.
    public static let maxDepth = 256

    /// The stream's single document, or nil when it holds none (empty, only comments).
    public static func compose(_ text: String) throws(YAMLError) -> YAMLNode? {
        var composer = Composer()
        return try composer.compose(Array(text.utf8))
    }
}

private struct Composer {
    /// A collection whose end has not come yet; nodes are appended in place.
    struct Open {
        var isMapping: Bool
        var items: [YAMLNode] = []
        var pairs: [(YAMLNode, YAMLNode)] = []
        /// The mapping's scalar keys so far: a repeated one is found in constant time.
        var keys: Set<String> = []
        var key: YAMLNode?
        var mark: YAMLNode.Mark
        var anchor: String?
        var size = 1
        /// Levels below this collection so far (aliases included).
        var height = 1
    }

    var open: [Open] = []
    var anchors: [String: (node: YAMLNode, size: Int, height: Int)] = [:]
    var expanded = 0
    var root: YAMLNode?
    var documents = 0

    mutating func compose(_ bytes: [UInt8]) throws(YAMLError) -> YAMLNode? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw YAMLError(problem: "out of memory", line: nil) }
        defer { yaml_parser_delete(&parser) }
        return try bytes.withUnsafeBufferPointer { buffer throws(YAMLError) -> YAMLNode? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var event = yaml_event_t()
            while true {
                guard yaml_parser_parse(&parser, &event) == 1 else { throw Self.error(parser) }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { return root }
                try take(event)
            }
        }
    }

    mutating func take(_ event: yaml_event_t) throws(YAMLError) {
        let mark = YAMLNode.Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documents += 1
            guard documents == 1 else { throw YAMLError(problem: "expected a single document, found another", line: mark.line) }
        case YAML_SCALAR_EVENT:
            let s = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: s.value, count: s.length), as: UTF8.self)
            try close(.scalar(.init(string: text, mark: mark)), size: 1, height: 1, anchor: Self.string(s.anchor), mark: mark)
        case YAML_ALIAS_EVENT:
            let name = Self.string(event.data.alias.anchor) ?? ""
            guard let target = anchors[name] else {
                throw YAMLError(problem: "alias *\(Inert.text(name, limit: 64)) names no anchor before it", line: mark.line)
            }
            // What an alias repeats is nested where it stands: the depth bound counts it there.
            guard open.count + target.height <= YAML.maxDepth else {
                throw YAMLError(problem: "nested deeper than \(YAML.maxDepth) levels (through alias *\(Inert.text(name, limit: 64)))", line: mark.line)
            }
            try close(target.node, size: target.size, height: target.height, anchor: nil, mark: mark, isAlias: true)
        case YAML_SEQUENCE_START_EVENT where open.count >= YAML.maxDepth, YAML_MAPPING_START_EVENT where open.count >= YAML.maxDepth:
            throw YAMLError(problem: "nested deeper than \(YAML.maxDepth) levels", line: mark.line)
        case YAML_SEQUENCE_START_EVENT:
            open.append(Open(isMapping: false, mark: mark, anchor: Self.string(event.data.sequence_start.anchor)))
        case YAML_MAPPING_START_EVENT:
            open.append(Open(isMapping: true, mark: mark, anchor: Self.string(event.data.mapping_start.anchor)))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            let done = open.removeLast()
            let node: YAMLNode = done.isMapping ? .mapping(.init(pairs: done.pairs, mark: done.mark)) : .sequence(.init(items: done.items, mark: done.mark))
            try close(node, size: done.size, height: done.height, anchor: done.anchor, mark: mark)
        default:
            break  // stream start, document end
        }
    }

    /// A finished node goes into the collection it is in, or becomes the document.
    mutating func close(_ node: YAMLNode, size: Int, height: Int, anchor: String?, mark: YAMLNode.Mark, isAlias: Bool = false) throws(YAMLError) {
        // Every node once, an alias as the whole subtree it repeats.
        expanded += isAlias ? size : 1
        guard expanded <= YAML.maxExpandedNodes else {
            throw YAMLError(problem: "the document expands to more than \(YAML.maxExpandedNodes) nodes (through its aliases)", line: mark.line)
        }
        if let anchor { anchors[anchor] = (node, size, height) }
        guard !open.isEmpty else {
            root = node
            return
        }
        let top = open.count - 1
        open[top].size += size
        open[top].height = max(open[top].height, height + 1)
        if !open[top].isMapping {
            open[top].items.append(node)
        } else if let key = open[top].key {
            open[top].pairs.append((key, node))
            open[top].key = nil
        } else {
            // A key given twice is refused here, for every reader; keys that are canonically
            // equivalent (NFC and NFD of one name) count as the same, so look-alikes are refused too.
            if let text = node.string, !open[top].keys.insert(text).inserted {
                throw YAMLError(problem: "'\(Inert.text(text, limit: 64))' is defined twice in this mapping", line: mark.line)
            }
            open[top].key = node
        }
    }

    static func string(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        p.map { String(cString: $0) }
    }

    static func error(_ parser: yaml_parser_t) -> YAMLError {
        let problem = parser.problem.map { String(cString: $0) } ?? "malformed YAML"
        let context = parser.context.map { String(cString: $0) + ": " } ?? ""
        return YAMLError(problem: context + problem, line: Int(parser.problem_mark.line) + 1)
    }
}
