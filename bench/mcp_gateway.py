"""lanyard-bench, MCP gateway: tool calls per second through lanyard-mcp against the same
server called directly (issue 17), in one run. A raw JSON-RPC client (newline-delimited,
as MCP's stdio transport) keeps 1 or 16 tools/call requests in flight; the server is the
tests' recording FastMCP server (the Python `mcp` SDK), run as the bench agent's uid.

usage: mcp_gateway.py BIN_DIR [--smoke]   (needs the project venv's python: mcp installed)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, Daemon, agent_identity  # noqa: E402

SERVER = os.path.join(ROOT, "Tests/python/gateway/recording_server.py")


def policy(uid):
    return f"""trust_domain: bench.internal
capabilities:
  rec:read: {{ risk: low }}
agents:
  bench: {{ uid: {uid}, grants: [rec:read] }}
mcp_servers:
  rec: {{}}
"""


class Session:
    """A stdio MCP session with `argv`, driven line by line."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.out = self.proc.stdout
        self.next_id = 0
        self.send({"method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                                      "clientInfo": {"name": "bench", "version": "0"}}})
        self.receive()
        self.proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    def send(self, message):
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id, **message}).encode() + b"\n")

    def receive(self):
        m = json.loads(self.out.readline())
        if "error" in m or m.get("result", {}).get("isError"):
            sys.exit(f"mcp bench: a call failed: {m}")
        return m

    def calls_per_second(self, in_flight, seconds):
        call = {"method": "tools/call", "params": {"name": "read", "arguments": {"path": "/srv/bench"}}}
        for _ in range(in_flight):
            self.send(call)
        done, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            self.receive()
            done += 1
            self.send(call)
        elapsed = time.monotonic() - start
        for _ in range(in_flight):
            self.receive()
        return done / elapsed

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def main():
    bin_dir = sys.argv[1]
    smoke = "--smoke" in sys.argv
    seconds, runs = (0.5, 1) if smoke else (3, 3)
    uid, gid, as_agent = agent_identity()
    work = tempfile.mkdtemp(prefix="lanyard-mcp-bench.")
    os.chmod(work, 0o755)
    log = os.path.join(work, "calls.jsonl")
    open(log, "w").close()
    os.chown(log, uid, gid)
    daemon = Daemon(bin_dir, work, policy(uid), "lanyardd")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANYARD_SOCKET": daemon.socket, "RECORDING_LOG": log}
    direct = as_agent + [sys.executable, SERVER]
    gateway = as_agent + [os.path.join(bin_dir, "lanyard-mcp"), "--server", "rec", "--", sys.executable, SERVER]
    rows = []
    try:
        for in_flight in (1, 16):
            for name, argv in (("direct", direct), ("through lanyard-mcp", gateway)):
                s = Session(argv, env)
                s.calls_per_second(in_flight, 0.3)  # warm-up
                rate = statistics.median(s.calls_per_second(in_flight, seconds) for _ in range(runs))
                s.close()
                rows.append((name, in_flight, rate))
    finally:
        daemon.stop()
    print(f"mcp gateway: tools/call per second, recording FastMCP server, {runs} run(s) of {seconds} s, median")
    for name, in_flight, rate in rows:
        base = next(r for n, f, r in rows if n == "direct" and f == in_flight)
        print(f"  {name:<22} {in_flight:>2} in flight  {rate:>8.0f} calls/s  {100 * rate / base:>4.0f}% of direct")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
