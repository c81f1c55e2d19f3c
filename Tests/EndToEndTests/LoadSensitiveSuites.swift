import Testing

/// The suites that measure another peer's latency during an attack, and the one that
/// hashes gigabytes of executables, run one after another, never beside each other — and
/// `scripts/test.sh` runs them after every other suite, not beside them: each measures its
/// own attack, not the daemons, fsyncs and hashing of the tests next to it.
@Suite(.serialized) enum LoadSensitive {}
