extension String {
    /// Byte-for-byte equality of the UTF-8 forms. Swift's `==` is canonical equivalence
    /// (NFC equals NFD, KELVIN SIGN equals K): never the test for names, audiences, paths
    /// or anything else a peer chooses and a check relies on.
    @inlinable public func sameBytes(as other: String) -> Bool { utf8.elementsEqual(other.utf8) }
}

extension StringProtocol {
    /// Without the spaces, tabs and line ends around it.
    public var trimmed: Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0.isNewline }
        guard let first = firstIndex(where: { !isBlank($0) }), let last = lastIndex(where: { !isBlank($0) }) else { return "" }
        return Substring(self[first...last])
    }
}
