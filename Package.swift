// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sotto",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sotto", targets: ["sotto"]),
        .executable(name: "sotto-bench", targets: ["sotto-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // Pure protocol logic: Noise, cells, fragmentation, flow bookkeeping. No sockets.
        .target(
            name: "SottoTunnel",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        // Pure SOCKS5 pieces NIOSOCKS leaves to the caller: RFC 1929 auth, RFC 1928 UDP header.
        .target(
            name: "SottoSOCKS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSOCKS", package: "swift-nio-extras"),
            ]
        ),
        // Tor control-port protocol, sans-I/O: reply parser, commands, SAFECOOKIE, auth state machine.
        .target(
            name: "TorControl",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The TOML configuration, parsed and validated into plain structs.
        .target(
            name: "SottoConfig",
            dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]
        ),
        // I/O at the edges: SOCKS server, forwards, tunnel channels, exit services.
        .target(
            name: "SottoGateway",
            dependencies: [
                "SottoTunnel", "SottoSOCKS", "SottoConfig", "TorControl", "SottoShaping", "SottoChannels",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSOCKS", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(name: "TorTestnet", dependencies: ["TorControl"]),
        .systemLibrary(name: "CLibCoAP", pkgConfig: "libcoap-3-openssl", providers: [.apt(["libcoap3-dev"])]),
        // Shaping policies and schedules, sans-I/O: time passed in as nanoseconds, randomness injected.
        // Its generic core runs per cell inside SottoGateway: cross-module optimization lets the
        // release build specialize it there (perf of a shaped exit: ShapingCore.poll 7.4 % of the
        // samples unspecialized, with generic-metadata lookups and value witnesses; 2.1 % specialized).
        .target(name: "SottoShaping", swiftSettings: [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]),
        // Channels: private identities, sealed sender, port hopping. Pure: no sockets, time passed in.
        .target(name: "SottoChannels", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "SottoCoAP", dependencies: ["CLibCoAP", "CSQLite", "SottoConfig"]),
        .executableTarget(
            name: "sotto",
            dependencies: [
                "SottoGateway", "SottoConfig", "SottoTunnel", "TorTestnet", "SottoCoAP", "SottoChannels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "sotto-bench",
            dependencies: [
                "SottoSOCKS",
                "SottoCoAP",
                "SottoTunnel",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSOCKS", package: "swift-nio-extras"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/sotto-bench"
        ),
        .testTarget(name: "SottoShapingTests", dependencies: ["SottoShaping"]),
        .testTarget(name: "SottoChannelsTests", dependencies: ["SottoChannels", "SottoCoAP", "sotto"]),
        .testTarget(name: "SottoCoAPTests", dependencies: ["SottoCoAP", "sotto"]),
        .testTarget(name: "TorTestnetTests", dependencies: ["TorTestnet", "TorControl", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "SottoTunnelTests",
                    dependencies: ["SottoTunnel", .product(name: "Crypto", package: "swift-crypto")],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "SottoSOCKSTests",
                    dependencies: ["SottoSOCKS", .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "NIOSOCKS", package: "swift-nio-extras")]),
        .testTarget(name: "SottoConfigTests", dependencies: ["SottoConfig"]),
        .testTarget(name: "TorControlTests",
                    dependencies: ["TorControl", .product(name: "NIOCore", package: "swift-nio"),
                                   .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "SottoGatewayTests", dependencies: ["SottoGateway", "SottoTunnel", "SottoConfig", "SottoShaping", "SottoSOCKS", "TorControl", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOSOCKS", package: "swift-nio-extras"), .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "SottoBenchTests",
            dependencies: ["sotto-bench", "SottoSOCKS", "SottoTunnel", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOSOCKS", package: "swift-nio-extras")],
            path: "Benchmarks/SottoBenchTests"),
    ],
    swiftLanguageModes: [.v5]
)
