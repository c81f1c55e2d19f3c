import Testing

/// The suites that measure another peer's latency during an attack, count the test
/// process's descriptors, or hash gigabytes of executables run one after another, never
/// beside each other — and `scripts/test.sh` runs them after every other suite, not beside
/// them: each measures its own attack, not the daemons, sockets, fsyncs and hashing of the
/// tests next to it. Suites of every test target join it with `extension LoadSensitive`.
@Suite(.serialized) public enum LoadSensitive {}
