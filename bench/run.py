"""lanyard-bench: Lanyard against the physical limits of this machine (issue 7).

Starts its own lanyardd on temp sockets and drives it with bench/build/loadgen (C,
protobuf-c, closed loop, one request in flight per connection) and, for the Python SDK's
authorize figure, bench/python_authorize.py (on the project venv); in the same run it
measures the reference servers of bench/refserver.c — an echo server with the same
framing (the transport ceiling) and the same server with a group-committed, fdatasync'ed
append per request (the durable ceiling) — and prints Lanyard's figures as ratios of
theirs. Run through scripts/bench.sh, which builds everything first.

usage: run.py BIN_DIR [--smoke] [--runs N] [--seconds S]
"""
import json
import os
import pwd
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
PYTHON_CELLS = [("blocking", 1), ("blocking", 16), ("asyncio", 1), ("asyncio", 16)]


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


class Daemon:
    def __init__(self, bin_dir, work, policy_text, name):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "agent.sock")
        with open(os.path.join(self.dir, "policy.yaml"), "w") as f:
            f.write(policy_text)
        key = os.path.join(self.dir, "master.key")
        subprocess.run([os.path.join(bin_dir, "lanyardd"), "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL)
        self.log = open(os.path.join(self.dir, "lanyardd.log"), "w+")
        self.proc = subprocess.Popen([os.path.join(bin_dir, "lanyardd"), "--policy", os.path.join(self.dir, "policy.yaml"),
                                      "--state-dir", os.path.join(self.dir, "state"), "--agent-socket", self.socket,
                                      "--admin-socket", os.path.join(self.dir, "admin.sock"), "--admin-group", "",
                                      "--master-key-file", key, "--max-connections-per-uid", "4096", "--max-connections", "4096",
                                      # provision-opaque keeps every lease it makes (TTL 300 s): a full run makes
                                      # ~250,000, and at the default bound of 1,000 the rest would be refusals
                                      "--max-leases-per-agent", "1000000",
                                      ],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                sys.exit("lanyardd did not start:\n" + self.log.read())
            time.sleep(0.02)

    def memory_kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Reference:
    def __init__(self, work, mode):
        self.socket = os.path.join(work, f"ref-{mode}.sock")
        args = [REFSERVER, self.socket, mode] + ([os.path.join(work, "ref-durable.dat")] if mode == "durable" else [])
        self.proc = subprocess.Popen(args)
        while not os.path.exists(self.socket):
            time.sleep(0.01)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


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
    many_agents = 1000 if smoke else 10000
    idle = 50 if smoke else 1000
    uid, _, as_agent = agent_identity()
    work = tempfile.mkdtemp(prefix="lanyard-bench.")
    os.chmod(work, 0o755)
    rows = []

    def row(scenario, conns, r, ceiling=None, note=""):
        ratio = f"{100 * r['rps'] / ceiling:.0f}%" if ceiling else ""
        rows.append((scenario, conns, r["rps"], r["min"], r["max"], r["p50_us"], r["p99_us"], r["p999_us"], ratio, note, r["errors"]))

    echo, durable = Reference(work, "echo"), Reference(work, "durable")
    daemon = Daemon(bin_dir, work, policy(10, uid), "lanyardd-10")
    ceilings = {}
    try:
        for n in conn_counts:
            ceilings[("echo", n)] = measure([], echo.socket, "hello", n, seconds, runs, False)
            row("C echo (transport ceiling)", n, ceilings[("echo", n)])
        for n in conn_counts:
            ceilings[("durable", n)] = measure([], durable.socket, "authorize", n, seconds, runs, False)
            row("C fdatasync group commit (durable ceiling)", n, ceilings[("durable", n)])
        for n in conn_counts:
            row("hello", n, measure(as_agent, daemon.socket, "hello", n, seconds, runs, True), ceilings[("echo", n)]["rps"], "of transport")
        authorize_small = {}
        for n in conn_counts:
            authorize_small[n] = measure(as_agent, daemon.socket, "authorize", n, seconds, runs, True)
            row("authorize-low", n, authorize_small[n], ceilings[("durable", n)]["rps"], "of durable")
        for mode, n in PYTHON_CELLS:
            c = authorize_small.get(n)
            row("python authorize-low, " + ("Client per thread" if mode == "blocking" else "one AsyncClient, tasks"), n,
                measure(as_agent, daemon.socket, mode, n, seconds, runs, True, python_load),
                c["rps"] if c else None, "of C authorize-low" if c else "")
        for n in conn_counts:
            row("provision-opaque", n, measure(as_agent, daemon.socket, "provision", n, seconds, runs, True), ceilings[("durable", n)]["rps"], "of durable")
        for n in conn_counts:
            row("issue-identity", n, measure(as_agent, daemon.socket, "identity", n, seconds, runs, True))
        peak_after_runs = daemon.memory_kib("VmHWM")
        rss_after_runs = daemon.memory_kib("VmRSS")
    finally:
        echo.stop()
        durable.stop()
        daemon.stop()

    big = Daemon(bin_dir, work, policy(many_agents, uid), f"lanyardd-{many_agents}")
    try:
        r = measure(as_agent, big.socket, "authorize", 1, seconds, runs, True)
        small_p50 = authorize_small[1]["p50_us"]
        row(f"authorize, {many_agents} agents × 20 grants", 1, r, None, f"p50 {100 * r['p50_us'] / small_p50:.0f}% of 10 agents'")
        many_agents_p50 = r["p50_us"]
        holder = subprocess.Popen(as_agent + [LOADGEN, big.socket, "idle", str(idle), "3600"], stdout=subprocess.PIPE, text=True)
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
        print(fmt((r[0], r[1], f"{r[2]:.0f}", f"{r[3]:.0f}", f"{r[4]:.0f}", f"{r[5]:.0f}", f"{r[6]:.0f}", f"{r[7]:.0f}", r[8], r[9], r[10])))
    print(f"daemon memory: peak RSS {peak_after_runs / 1024:.1f} MB, RSS {rss_after_runs / 1024:.1f} MB after the runs above; "
          f"RSS {idle_rss / 1024:.1f} MB holding {idle} idle connections ({many_agents}-agent policy)")
    print(f"authorize p50: {authorize_small[1]['p50_us']:.0f} µs with 10 agents, {many_agents_p50:.0f} µs with {many_agents}")
    errors = sum(r[10] for r in rows)
    if errors:
        sys.exit(f"lanyard-bench: {errors} requests failed")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
