// swift-tools-version:6.1
import PackageDescription

// Dependencies point one way: LanyardWire and LanyardCore at the bottom, then
// LanyardCrypto and LanyardStore, then LanyardServer, then the executables.
// LanyardClient depends only on LanyardWire.
// What the loader touches before main: lld packs the relative relocations of a
// position-independent binary (DT_RELR, glibc 2.36) where gold writes 24 bytes for each
// (2 MB of lanyardd's start), and nothing needs the programs' symbols exported
// (backtraces read .symtab).
let leanExecutable: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic"]),
]

let package = Package(
    name: "Lanyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lanyardd", targets: ["lanyardd"]),
        .executable(name: "lanyardctl", targets: ["lanyardctl"]),
        .executable(name: "lanyard-mcp", targets: ["lanyard-mcp"]),
        .library(name: "LanyardClient", targets: ["LanyardClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        // No traits: their Foundation streams and field masks are unused, and would link Foundation and its ICU into lanyardd.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),  // LogHandler.log(event:)
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // Built anyway for async-http-client; named for its TLSConfiguration (OpenBao's ca_file).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
    ],
    targets: [
        // System libraries (Debian: libssl-dev, libsqlite3-dev, libyaml-dev).
        .systemLibrary(name: "CLibcrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),

        // Two Linux syscalls Glibc's module does not export (prctl, per-thread setresuid).
        .target(name: "CLanyardSys"),

        // Bottom layer.
        .target(name: "LanyardWire", dependencies: [
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .target(name: "LanyardCore", dependencies: ["CYAML"]),

        // Middle layer.
        .target(name: "LanyardCrypto", dependencies: ["CLibcrypto", "LanyardCore"]),
        .target(name: "LanyardStore", dependencies: [
            "LanyardCore", "LanyardCrypto", "CSQLite", "CLanyardSys",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),

        // Server.
        .target(name: "LanyardServer", dependencies: [
            "LanyardWire", "LanyardCore", "LanyardCrypto", "LanyardStore", "CLanyardSys",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),

        // Client library (agents link this).
        .target(name: "LanyardClient", dependencies: [
            "LanyardWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], path: "clients/swift/Sources/LanyardClient"),

        // Executables.
        .executableTarget(name: "lanyardd", dependencies: [
            "LanyardServer", "CLanyardSys", "LanyardCore", "LanyardStore", "LanyardCrypto", "LanyardWire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], linkerSettings: leanExecutable),
        .executableTarget(name: "lanyardctl", dependencies: [
            "LanyardClient", "LanyardCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            // `lanyardctl console`'s local web server (Sources/lanyardctl/Console).
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], linkerSettings: leanExecutable),

        // The MCP gateway (docs/mcp.md): an agent-side program, so the client library only.
        .executableTarget(name: "lanyard-mcp", dependencies: [
            "LanyardClient", "LanyardCore", "LanyardWire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], linkerSettings: leanExecutable),

        // Tests.
        .target(name: "LanyardTestSupport", dependencies: ["CLanyardSys"], path: "Tests/LanyardTestSupport"),
        .testTarget(name: "LanyardCoreTests", dependencies: ["LanyardCore"]),
        .testTarget(name: "LanyardWireTests", dependencies: [
            "LanyardWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOTestUtils", package: "swift-nio"),
        ]),
        .testTarget(name: "LanyardStoreTests", dependencies: ["LanyardStore", "LanyardCore", "LanyardCrypto", "LanyardTestSupport",
                                                             .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "LanyardServerTests", dependencies: [
            "LanyardServer", "LanyardClient", "LanyardWire", "LanyardCore", "LanyardStore", "LanyardTestSupport", "CLanyardSys",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "EndToEndTests", dependencies: ["LanyardClient", "LanyardWire", "LanyardTestSupport"],
                    exclude: ["Scripts"]),  // helper programs the tests run, not sources
    ]
)

// Fuzz targets (scripts/fuzz.sh): built only with LANYARD_FUZZ=1, under
// `-sanitize=fuzzer,address`, since libFuzzer supplies their main.
if Context.environment["LANYARD_FUZZ"] == "1" {
    package.targets += [
        .executableTarget(name: "FuzzDispatch", dependencies: [
            "LanyardServer", "LanyardWire", "LanyardCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "fuzz/FuzzDispatch"),
        .executableTarget(name: "FuzzPolicy", dependencies: ["LanyardCore"], path: "fuzz/FuzzPolicy"),
    ]
}

