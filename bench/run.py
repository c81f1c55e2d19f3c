"""lanyard-bench: Lanyard against the physical limits of this machine (issue 7).

Starts its own lanyardd on temp sockets and drives it with bench/build/loadgen (C,
protobuf-c, closed loop, one request in flight per connection) and, for the Python SDK's
authorize figure, bench/python_authorize.py (on the project venv); in the same run it
measures the reference servers of bench/refserver.c — two echo servers with the same
framing, thread-per-connection and single-threaded epoll (the transport ceiling is the
higher of the two), and the same server with a group-committed, fdatasync'ed append per
request (the durable ceiling) — and prints Lanyard's figures as ratios of theirs, then
issue 18's targets with the measured value and met / not met. With --peers it measures,
in the same run and against the same ceilings, OpenSSH's ssh-agent (request-identities,
one key) and Redis (`SET` with `appendfsync always`, redis-benchmark over a Unix socket).
Run through scripts/bench.sh, which builds everything first.

usage: run.py BIN_DIR [--smoke] [--runs N] [--seconds S] [--peers]
"""
import csv
import io
import json
import os
import pwd
import socket as socketlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "bench/build/loadgen")
REFSERVER = os.path.join(ROOT, "bench/build/refserver")
# The Python SDK's figures: bench/python_authorize.py on the project venv (scripts/lib.sh ensure_venv).
PYTHON_BENCH = os.path.join(ROOT, "bench/python_authorize.py")
VENV_PYTHON = os.path.join(os.environ.get("LANYARD_VENV") or os.path.join(ROOT, ".build-tools/venv"), "bin/python")
MAINTENANCE_S = 2  # the benchmarked daemon's --maintenance-interval-seconds
PYTHON_CELLS = [("blocking", 1), ("blocking", 16), ("asyncio", 1), ("asyncio", 16)]
SAMPLE_POLICY = os.path.join(ROOT, "examples/policy.yaml")

# Issue 18's targets: scenario → {connections: minimum ratio to its ceiling}, and the rest.
RATIO_TARGETS = {
    "hello": ("echo", {1: 0.60, 16: 0.40, 64: 0.40}),
    "authorize-low": ("durable", {1: 0.80, 16: 0.70, 64: 0.70}),
    "provision-opaque": ("durable", {1: 0.60, 16: 0.50, 64: 0.50}),
    "issue-identity": ("durable", {16: 0.40}),
}
P99_CONNS, P99_FACTOR = 16, 3
MEMORY_TARGETS_MB = {"after start (sample policy)": 30, "after the benchmark (10 agents)": 50,
                     "added by 1,000 idle connections": 20, "added by the 10,000-agent policy": 40}
STARTUP_TARGET_MS = 150


def agent_identity():
    """The uid the load generator runs as: root can never be an agent."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid(), []
    try:
        pw = pwd.getpwnam("lanyard-bench")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "lanyard-bench"], check=True)
        pw = pwd.getpwnam("lanyard-bench")
    return pw.pw_uid, pw.pw_gid, ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]


def policy(agents, uid):
    """`agents` agents × 20 grants; the one named bench is the load generator's uid."""
    caps = ["github:read_repo"] + [f"github:act_{i:02d}" for i in range(1, 20)]
    lines = ["trust_domain: bench.internal", "services:", "  github: { kind: opaque, max_ttl_seconds: 900 }", "capabilities:"]
    lines += [f"  {c}: {{ risk: low }}" for c in caps]
    lines.append("agents:")
    grants = "[" + ", ".join(caps) + "]"
    lines.append(f"  bench: {{ uid: {uid}, grants: {grants} }}")
    for i in range(1, agents):
        lines.append(f"  agent-{i:05d}: {{ uid: {200000 + i}, grants: {grants} }}")
    return "\n".join(lines) + "\n"


HELLO_FRAME = bytes([0, 0, 0, 4, 0x08, 0x01, 0x52, 0x00])  # Request{id: 1, hello: {}}


def answers_hello(path):
    """Whether a daemon answers a Hello on `path` now (any answer: root is no agent)."""
    try:
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(HELLO_FRAME)
            return len(s.recv(4)) == 4
    except OSError:
        return False


class Daemon:
    def __init__(self, bin_dir, work, policy_text, name, extra=()):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "agent.sock")
        with open(os.path.join(self.dir, "policy.yaml"), "w") as f:
            f.write(policy_text)
        key = os.path.join(self.dir, "master.key")
        subprocess.run([os.path.join(bin_dir, "lanyardd"), "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL)
        self.log = open(os.path.join(self.dir, "lanyardd.log"), "w+")
        started = time.monotonic()
        self.proc = subprocess.Popen([os.path.join(bin_dir, "lanyardd"), "--policy", os.path.join(self.dir, "policy.yaml"),
                                      "--state-dir", os.path.join(self.dir, "state"), "--agent-socket", self.socket,
                                      "--admin-socket", os.path.join(self.dir, "admin.sock"), "--admin-group", "",
                                      "--master-key-file", key, "--max-connections-per-uid", "4096", "--max-connections", "4096",
                                      # provision-opaque keeps every lease it makes (TTL 300 s): a full run makes
                                      # ~250,000, and at the default bound of 1,000 the rest would be refusals
                                      "--max-leases-per-agent", "1000000",
                                      *extra],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        # Polling for the first answer, with a deadline: the measurement of startup itself.
        while not answers_hello(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                sys.exit("lanyardd did not start:\n" + self.log.read())
            time.sleep(0.002)
        self.startup_ms = 1000 * (time.monotonic() - started)

    def memory_kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Server:
    """A process serving on a Unix socket, stopped with `stop`."""
    def __init__(self, args, socket, **popen):
        self.socket = socket
        self.proc = subprocess.Popen(args, **popen)
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                sys.exit(f"lanyard-bench: {args[0]} did not start")
            time.sleep(0.01)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def reference(work, mode):
    socket = os.path.join(work, f"ref-{mode}.sock")
    return Server([REFSERVER, socket, mode] + ([os.path.join(work, "ref-durable.dat")] if mode == "durable" else []), socket)


def ssh_agent(work):
    """OpenSSH's agent holding one Ed25519 key."""
    socket, key = os.path.join(work, "ssh-agent.sock"), os.path.join(work, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    agent = Server(["ssh-agent", "-D", "-a", socket], socket, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ssh-add", "-q", key], check=True, env={**os.environ, "SSH_AUTH_SOCK": socket}, stderr=subprocess.DEVNULL)
    return agent


def redis(work):
    """Redis with every write fsync'ed before its answer (`appendfsync always`)."""
    socket, data = os.path.join(work, "redis.sock"), os.path.join(work, "redis")
    os.makedirs(data)
    return Server(["redis-server", "--port", "0", "--unixsocket", socket, "--dir", data, "--save", "",
                   "--appendonly", "yes", "--appendfsync", "always"], socket, stdout=subprocess.DEVNULL)


def redis_set(socket, conns, seconds, expected_rps):
    """redis-benchmark SET over `conns` connections, sized to take about `seconds`."""
    requests = max(1000, int(expected_rps * seconds))
    out = subprocess.run(["redis-benchmark", "-s", socket, "-t", "set", "-c", str(conns), "-n", str(requests), "--csv"],
                         check=True, capture_output=True, text=True).stdout
    row = next(r for r in csv.DictReader(io.StringIO(out)) if r["test"] == "SET")
    rps = float(row["rps"])
    return {"rps": rps, "min": rps, "max": rps, "p50_us": 1000 * float(row["p50_latency_ms"]),
            "p99_us": 1000 * float(row["p99_latency_ms"]), "p999_us": 0, "errors": 0}  # redis-benchmark gives no p999


def load(as_agent, socket, scenario, conns, seconds, check=False):
    cmd = as_agent + [LOADGEN, socket, scenario, str(conns), str(seconds)] + (["--check"] if check else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def python_load(as_agent, socket, mode, in_flight, seconds, check=False):
    """One run of the Python SDK's authorize loop (it always checks every answer)."""
    cmd = as_agent + [VENV_PYTHON, PYTHON_BENCH, socket, mode, str(in_flight), str(seconds)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def measure(as_agent, socket, scenario, conns, seconds, runs, check, loader=load):
    """Median of `runs` runs by requests/s, with the min and max. With `check`, a short
    warm-up first unpacks every answer and fails on any error status; the timed runs
    then only read frames, as they do against the reference servers."""
    if check:
        warm = loader(as_agent, socket, scenario, conns, 0.2, True)
        if warm["errors"] or not warm["requests"]:
            sys.exit(f"lanyard-bench: {scenario} with {conns} connections failed its check: {warm}")
    results = sorted((loader(as_agent, socket, scenario, conns, seconds) for _ in range(runs)), key=lambda r: r["rps"])
    median = results[len(results) // 2]
    errors = sum(r["errors"] for r in results)
    return {**median, "min": results[0]["rps"], "max": results[-1]["rps"], "errors": errors}


def main():
    args = sys.argv[1:]
    bin_dir = args[0]
    smoke = "--smoke" in args
    runs = int(args[args.index("--runs") + 1]) if "--runs" in args else (1 if smoke else 5)
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else (0.3 if smoke else 3)
    conn_counts = [1, 4] if smoke else [1, 16, 64]
    peers = "--peers" in args
    many_agents = 1000 if smoke else 10000
    idle = 50 if smoke else 1000
    uid, _, as_agent = agent_identity()
    work = tempfile.mkdtemp(prefix="lanyard-bench.")
    os.chmod(work, 0o755)
    rows = []

    def row(scenario, conns, r, ceiling=None, note=""):
        ratio = f"{100 * r['rps'] / ceiling:.0f}%" if ceiling else ""
        rows.append((scenario, conns, r["rps"], r["min"], r["max"], r["p50_us"], r["p99_us"], r["p999_us"], ratio, note, r["errors"]))

    results = {}  # (scenario, connections) → measured figures

    def cell(scenario, conns, r, ceiling=None, note=""):
        results[(scenario, conns)] = r
        row(scenario, conns, r, ceiling, note)

    sample = Daemon(bin_dir, work, open(SAMPLE_POLICY).read(), "lanyardd-sample")
    startup_ms, sample_rss = sample.startup_ms, sample.memory_kib("VmRSS")
    sample.stop()
    echo, epoll, durable = reference(work, "echo"), reference(work, "epoll"), reference(work, "durable")
    # Its maintenance pass (expiry, pruning, free memory back to the kernel) every 2 s, so
    # that the memory after the benchmark is read after one.
    daemon = Daemon(bin_dir, work, policy(10, uid), "lanyardd-10", ["--maintenance-interval-seconds", str(MAINTENANCE_S)])
    start_rss_10 = daemon.memory_kib("VmRSS")
    ceilings = {}
    try:
        for n in conn_counts:
            threaded = measure([], echo.socket, "hello", n, seconds, runs, False)
            single = measure([], epoll.socket, "hello", n, seconds, runs, False)
            row("C echo, thread per connection", n, threaded)
            row("C echo, one thread with epoll", n, single)
            ceilings[("echo", n)] = max(threaded, single, key=lambda r: r["rps"])
        for n in conn_counts:
            ceilings[("durable", n)] = measure([], durable.socket, "authorize", n, seconds, runs, False)
            row("C fdatasync group commit (durable ceiling)", n, ceilings[("durable", n)])
        for n in conn_counts:
            cell("hello", n, measure(as_agent, daemon.socket, "hello", n, seconds, runs, True), ceilings[("echo", n)]["rps"], "of transport")
        authorize_small = {}
        for n in conn_counts:
            authorize_small[n] = measure(as_agent, daemon.socket, "authorize", n, seconds, runs, True)
            cell("authorize-low", n, authorize_small[n], ceilings[("durable", n)]["rps"], "of durable")
        for mode, n in PYTHON_CELLS:
            c = authorize_small.get(n)
            row("python authorize-low, " + ("Client per thread" if mode == "blocking" else "one AsyncClient, tasks"), n,
                measure(as_agent, daemon.socket, mode, n, seconds, runs, True, python_load),
                c["rps"] if c else None, "of C authorize-low" if c else "")
        for n in conn_counts:
            cell("provision-opaque", n, measure(as_agent, daemon.socket, "provision", n, seconds, runs, True), ceilings[("durable", n)]["rps"], "of durable")
        for n in conn_counts:
            cell("issue-identity", n, measure(as_agent, daemon.socket, "identity", n, seconds, runs, True), ceilings[("durable", n)]["rps"], "of durable")
        if peers:
            agent, store = ssh_agent(work), redis(work)
            try:
                for n in conn_counts:
                    row("peer: ssh-agent request-identities", n, measure([], agent.socket, "ssh-identities", n, seconds, runs, True),
                        ceilings[("echo", n)]["rps"], "of transport")
                for n in conn_counts:
                    row("peer: Redis SET, appendfsync always", n, redis_set(store.socket, n, seconds, ceilings[("durable", n)]["rps"]),
                        ceilings[("durable", n)]["rps"], "of durable")
            finally:
                agent.stop()
                store.stop()
        peak_after_runs = daemon.memory_kib("VmHWM")
        time.sleep(MAINTENANCE_S + 0.5)  # one maintenance pass: the daemon runs one every MAINTENANCE_S
        rss_after_runs = daemon.memory_kib("VmRSS")
    finally:
        echo.stop()
        epoll.stop()
        durable.stop()
        daemon.stop()

    big = Daemon(bin_dir, work, policy(many_agents, uid), f"lanyardd-{many_agents}")
    start_rss_big = big.memory_kib("VmRSS")
    try:
        r = measure(as_agent, big.socket, "authorize", 1, seconds, runs, True)
        small_p50 = authorize_small[1]["p50_us"]
        row(f"authorize, {many_agents} agents × 20 grants", 1, r, None, f"p50 {100 * r['p50_us'] / small_p50:.0f}% of 10 agents'")
        many_agents_p50 = r["p50_us"]
        holder = subprocess.Popen(as_agent + [LOADGEN, big.socket, "idle", str(idle), "3600"], stdout=subprocess.PIPE, text=True)
        before_idle = big.memory_kib("VmRSS")
        json.loads(holder.stdout.readline())  # every connection open and answered
        idle_rss = big.memory_kib("VmRSS")
        holder.kill()
        holder.wait()
    finally:
        big.stop()

    print(f"lanyard-bench: {'smoke' if smoke else 'full'} run, {runs} run(s) of {seconds} s per cell, {os.cpu_count()} cores, bin {bin_dir}")
    header = ("scenario", "conns", "req/s", "min", "max", "p50 µs", "p99 µs", "p999 µs", "ratio", "", "errors")
    widths = [46, 5, 10, 10, 10, 8, 8, 9, 6, 32, 6]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i in (0, 9) else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(header))
    for r in rows:
        print(fmt((r[0], r[1], f"{r[2]:.0f}", f"{r[3]:.0f}", f"{r[4]:.0f}", f"{r[5]:.0f}", f"{r[6]:.0f}", f"{r[7]:.0f}" if r[7] else "-", r[8], r[9], r[10])))
    print(f"daemon memory: peak RSS {peak_after_runs / 1024:.1f} MB, RSS {rss_after_runs / 1024:.1f} MB after the runs above and a maintenance pass; "
          f"RSS {idle_rss / 1024:.1f} MB holding {idle} idle connections ({many_agents}-agent policy)")
    print(f"authorize p50: {authorize_small[1]['p50_us']:.0f} µs with 10 agents, {many_agents_p50:.0f} µs with {many_agents}")
    print_targets(results, ceilings, conn_counts, {
        "after start (sample policy)": sample_rss,
        "after the benchmark (10 agents)": rss_after_runs,
        "added by 1,000 idle connections": (idle_rss - before_idle) * 1000 / idle,
        "added by the 10,000-agent policy": (start_rss_big - start_rss_10) * 10000 / max(many_agents - 10, 1),
    }, startup_ms, smoke)
    errors = sum(r[10] for r in rows)
    if errors:
        sys.exit(f"lanyard-bench: {errors} requests failed")
    subprocess.run(["rm", "-rf", work])


def print_targets(results, ceilings, conn_counts, memory_kib, startup_ms, smoke):
    """Issue 18's targets: each with what this run measured and whether it is met."""
    lines = []

    def target(name, value, goal, met):
        lines.append((name, value, goal, "met" if met else "NOT MET"))

    for scenario, (kind, goals) in RATIO_TARGETS.items():
        for n, goal in goals.items():
            r, c = results.get((scenario, n)), ceilings.get((kind, n))
            if r and c:
                ratio = r["rps"] / c["rps"]
                target(f"{scenario} vs {kind}, {n} conn", f"{100 * ratio:.0f}%", f">= {100 * goal:.0f}%", ratio >= goal)
    for (scenario, n), r in sorted(results.items()):
        if n == P99_CONNS and scenario in RATIO_TARGETS:
            c = ceilings[(RATIO_TARGETS[scenario][0], n)]
            target(f"{scenario} p99, {n} conn", f"{r['p99_us']:.0f} µs", f"<= {P99_FACTOR}x {c['p99_us']:.0f} µs", r["p99_us"] <= P99_FACTOR * c["p99_us"])
    for name, goal in MEMORY_TARGETS_MB.items():
        mb = memory_kib[name] / 1024
        target(f"RSS {name}" + (" (scaled)" if smoke and "added" in name else ""), f"{mb:.1f} MB", f"<= {goal} MB", mb <= goal)
    target("startup to ready (sample policy)", f"{startup_ms:.0f} ms", f"<= {STARTUP_TARGET_MS} ms", startup_ms <= STARTUP_TARGET_MS)
    missing = [f"{s} at {n}" for s, (_, g) in RATIO_TARGETS.items() for n in g if n not in conn_counts]
    print("issue 18 targets" + (" (smoke: the debug build, short cells; only indicative)" if smoke else "") + ":")
    for name, value, goal, verdict in lines:
        print(f"  {name.ljust(44)} {value.rjust(12)}  {goal.ljust(22)} {verdict}")
    if missing:
        print("  not measured in this run (connection counts): " + ", ".join(missing))


if __name__ == "__main__":
    main()
