import Testing

/// The suites that measure another peer's latency during an attack, and the one that
/// hashes gigabytes of executables, run one after another, never beside each other: each
/// measures its own attack, not the CPU and page-cache storm of the one next to it.
@Suite(.serialized) enum LoadSensitive {}
