"""lanyard-mcp end to end: a real lanyardd, the real Python `mcp` SDK (client session and
FastMCP server, `MCPServer` in mcp 2) over stdio through the real gateway binary, which
runs as a created agent uid (setpriv); an approver uid decides with `lanyardctl`.
(Issue 17, acceptance 1-4.)"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from lanyard_harness import Daemon, User, bin_dir, user

mcp = pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDING = os.path.join(HERE, "recording_server.py")
HOSTILE = os.path.join(HERE, "hostile_server.py")

POLICY = """
trust_domain: mcp.internal
{approvers}
services:
  github: {{ kind: opaque, default_ttl_seconds: 300 }}
capabilities:
  rec:read: {{ risk: low }}
  rec:write: {{ risk: medium }}
  rec:deploy: {{ risk: high }}
  rec:secret: {{ risk: low }}
  rec:credentials: {{ risk: low }}
  rec:hang: {{ risk: low }}
  github:read: {{ risk: low }}
  github:introspect: {{ risk: low }}
agents:
  mcp-agent:                       # only the gateway binary is this agent
    uid: {agent}
    exe: {bin}/lanyard-mcp
    grants: [rec:read, rec:write, rec:deploy, rec:credentials, rec:hang, github:read]
  inspector:                       # the same uid running lanyardctl: checks the leases
    uid: {agent}
    exe: {bin}/lanyardctl
    grants: [github:introspect]
mcp_servers:
  rec:
    tools:
      write: {{ resource: path }}
    env:
      GITHUB_TOKEN: {{ service: github, scope: [github:read] }}
    files:
      token.txt: {{ service: github, scope: [github:read] }}
  rec-short:
    tools:
      credentials: {{ capability: rec:credentials }}
      read: {{ capability: rec:read }}
    env:
      GITHUB_TOKEN: {{ service: github, scope: [github:read], ttl_seconds: 4 }}
  hostile:
    tools:
      read: {{ capability: rec:read }}
      hang: {{ capability: rec:hang }}
  hostile-short:
    tools:
      credentials: {{ capability: rec:credentials }}
    env:
      GITHUB_TOKEN: {{ service: github, scope: [github:read], ttl_seconds: 4 }}
"""


@dataclass
class Setup:
    daemon: Daemon
    agent: User
    approver: User
    workdir: str

    @property
    def recording_log(self) -> str:
        return os.path.join(self.workdir, "calls.jsonl")

    def calls(self) -> list[dict[str, Any]]:
        """Every call the recording server received."""
        if not os.path.exists(self.recording_log):
            return []
        with open(self.recording_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def argv(self, server: str = "rec", *options: str, command: str = RECORDING) -> list[str]:
        """The gateway's command line, run as the agent's uid."""
        return ["setpriv", f"--reuid={self.agent.uid}", f"--regid={self.agent.gid}", "--clear-groups",
                os.path.join(bin_dir(), "lanyard-mcp"), "--server", server, *options, "--", sys.executable, command]

    @property
    def env(self) -> dict[str, str]:
        """What the MCP client's config gives the gateway: no secret."""
        return {"LANYARD_SOCKET": self.daemon.agent_socket, "RECORDING_LOG": self.recording_log,
                "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    @asynccontextmanager
    async def session(self, server: str = "rec", *options: str, command: str = RECORDING) -> AsyncIterator[ClientSession]:
        argv = self.argv(server, *options, command=command)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=self.env)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as s:
                await s.initialize()
                yield s

    def introspect(self, secret: str) -> dict[str, Any]:
        # Exit status 2 says inactive; the answer is on stdout either way.
        r = self.daemon.ctl(["introspect", "--json"], as_user=self.agent, stdin=secret)
        assert r.returncode in (0, 2), r.stderr
        return json.loads(r.stdout)

    def decide(self, approve: bool, expect_args: dict[str, str] | None = None) -> dict[str, Any]:
        """Waits for the next pending approval; approves or denies it as the approver."""
        approval = self.daemon.next_approval(self.approver)
        if expect_args is not None:
            assert approval["args"] == expect_args, approval
        verb = "approve" if approve else "deny"
        self.daemon.ctl_ok(["approvals", verb, approval["approval_id"]], as_user=self.approver)
        return approval


def make_setup(approvers: bool) -> Iterator[Setup]:
    agent, approver = user("lanyard-test-a"), user("lanyard-test-b")
    policy = POLICY.format(agent=agent.uid, bin=os.path.realpath(bin_dir()), approvers=f"approvers: {{ uids: [{approver.uid}] }}" if approvers else "")
    d = Daemon(policy).start()
    workdir = tempfile.mkdtemp(prefix="lanyard-mcp-test.")
    os.chmod(workdir, 0o777)
    try:
        yield Setup(d, agent, approver, workdir)
    finally:
        d.cleanup()
        subprocess.run(["rm", "-rf", workdir], check=False)


@pytest.fixture
def setup(root: None) -> Iterator[Setup]:
    yield from make_setup(approvers=True)


@pytest.fixture
def setup_without_approvers(root: None) -> Iterator[Setup]:
    yield from make_setup(approvers=False)


def text(result: Any) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def tool_records(d: Daemon) -> list[dict[str, Any]]:
    return [r for r in d.audit() if r.get("event") == "tool_call"]


# Acceptance 1 and 3: decisions, filtering, and one audit record per call.

def test_low_runs_ungranted_and_unlisted_are_refused_and_tools_list_is_filtered(setup: Setup) -> None:
    async def body() -> None:
        async with setup.session() as s:
            listed = sorted(t.name for t in (await s.list_tools()).tools)
            assert listed == ["credentials", "deploy", "hang", "read", "write"], listed

            low = await s.call_tool("read", {"path": "/srv/a"})
            assert not low.is_error and text(low) == "contents of /srv/a"

            secret = await s.call_tool("secret", {})
            assert secret.is_error
            assert "capability rec:secret" in text(secret) and "did not receive" in text(secret), text(secret)

            unlisted = await s.call_tool("unlisted", {})
            assert unlisted.is_error and "did not receive" in text(unlisted), text(unlisted)
    asyncio.run(body())

    assert [c["tool"] for c in setup.calls()] == ["read"]
    records = tool_records(setup.daemon)
    by_tool = {r["mcp_tool"]: r for r in records}
    assert len(records) == 3 and set(by_tool) == {"read", "secret", "unlisted"}, records
    assert by_tool["read"]["decision"] == "allow" and by_tool["read"]["capability"] == "rec:read"
    assert by_tool["secret"]["decision"] == "deny" and by_tool["secret"]["capability"] == "rec:secret"
    assert by_tool["unlisted"]["decision"] == "deny"
    for r in records:
        assert r["mcp_server"] == "rec" and len(r["args_digest"]) == 64, r
    setup.daemon.ctl_ok(["audit", "verify"])


def test_the_agent_is_the_gateway_binary_not_its_uid(setup: Setup) -> None:
    # The agent's uid running another program (lanyardctl) is not the gateway's agent:
    # it cannot make the calls the gateway makes.
    r = setup.daemon.ctl(["authorize", "rec:read", "--json"], as_user=setup.agent)
    assert r.returncode != 0 and json.loads(r.stdout)["decision"] == "DENY", (r.stdout, r.stderr)
    assert "inspector" in setup.daemon.ctl_ok(["whoami"], as_user=setup.agent)


def test_high_without_approvers_is_denied(setup_without_approvers: Setup) -> None:
    setup = setup_without_approvers

    async def body() -> str:
        async with setup.session() as s:
            r = await s.call_tool("deploy", {"target": "production"})
            assert r.is_error
            return text(r)
    said = asyncio.run(body())
    assert "capability rec:deploy" in said, said
    assert setup.calls() == []
    [record] = tool_records(setup.daemon)
    assert record["decision"] == "deny" and record["mcp_tool"] == "deploy"


def test_medium_waits_for_a_human_runs_once_and_binds_its_arguments(setup: Setup) -> None:
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def body() -> list[Any]:
        async with setup.session("rec", "--approval-wait-seconds", "60") as s:
            # A: approved by a human while the call waits; runs once.
            call = asyncio.create_task(s.call_tool("write", {"path": "/srv/a", "content": "A"}, progress_callback=on_progress))
            approval = await asyncio.to_thread(setup.decide, True, {"path": '"/srv/a"', "content": '"A"'})
            a = await call
            # B: other arguments need their own approval; the approver denies it.
            call = asyncio.create_task(s.call_tool("write", {"path": "/srv/a", "content": "B"}))
            denied = await asyncio.to_thread(setup.decide, False, {"path": '"/srv/a"', "content": '"B"'})
            b = await call
            # A again: its approval was used up; a new one is opened (and denied).
            call = asyncio.create_task(s.call_tool("write", {"path": "/srv/a", "content": "A"}))
            again = await asyncio.to_thread(setup.decide, False)
            a2 = await call
            return [a, approval, b, denied, a2, again]
    a, approval, b, denied, a2, again = asyncio.run(body())

    assert not a.is_error and text(a) == "wrote 1 bytes to /srv/a", text(a)
    assert approval["resource"] == "/srv/a" and approval["capabilities"] == ["rec:write"]
    assert b.is_error and "denied" in text(b) and denied["approval_id"] != approval["approval_id"], text(b)
    assert a2.is_error and again["approval_id"] != approval["approval_id"]
    assert [c["arguments"]["content"] for c in setup.calls()] == ["A"]
    assert progress and approval["binding_code"] in progress[0], progress
    decisions = [(r["mcp_tool"], r["decision"]) for r in tool_records(setup.daemon)]
    # Each call: the request of its approval (pending), then the one decision that answered it.
    assert decisions == [("write", "pending"), ("write", "allow"), ("write", "pending"), ("write", "deny"),
                         ("write", "pending"), ("write", "deny")], decisions
    setup.daemon.ctl_ok(["audit", "verify"])


def test_a_retried_call_finds_its_approval(setup: Setup) -> None:
    async def body() -> tuple[Any, Any]:
        async with setup.session("rec", "--approval-wait-seconds", "1") as s:
            first = await s.call_tool("write", {"path": "/srv/r", "content": "R"})
            # Approved after the first attempt gave up: the retry uses it.
            listed = json.loads(setup.daemon.ctl_ok(["approvals", "list", "--json"], as_user=setup.approver))
            [pending] = listed
            setup.daemon.ctl_ok(["approvals", "approve", pending["approval_id"]], as_user=setup.approver)
            second = await s.call_tool("write", {"path": "/srv/r", "content": "R"})
            return first, (pending, second)
    first, (pending, second) = asyncio.run(body())
    assert first.is_error and pending["binding_code"] in text(first) and "lanyardctl approvals approve" in text(first), text(first)
    assert not second.is_error, text(second)
    assert len(setup.calls()) == 1


def test_identical_calls_at_the_same_moment_share_one_approval(setup: Setup) -> None:
    gw = RawGateway(setup, "rec", "--approval-wait-seconds", "1")
    gw.handshake()
    call = {"name": "write", "arguments": {"path": "/srv/same", "content": "S"}}
    for i in range(8):  # pipelined: decided concurrently
        gw.send(json.dumps({"jsonrpc": "2.0", "id": f"same-{i}", "method": "tools/call", "params": call}).encode())
    ids = {f"same-{i}" for i in range(8)}
    gw.read_until(lambda m: ids <= {x.get("id") for x in gw.seen})
    answers = [m for m in gw.seen if m.get("id") in ids]
    assert all(a["result"]["isError"] for a in answers)
    listed = json.loads(setup.daemon.ctl_ok(["approvals", "list", "--json"], as_user=setup.approver))
    assert len(listed) == 1, listed
    assert all(listed[0]["approval_id"] in a["result"]["content"][0]["text"] for a in answers)
    gw.process.send_signal(signal.SIGTERM)
    assert gw.wait() == 0


# Acceptance 2: credentials.

class RawGateway:
    """The gateway driven line by line (for exits and hostile traffic the SDK hides)."""

    def __init__(self, setup: Setup, server: str = "rec", *options: str, command: str = RECORDING,
                 env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(setup.argv(server, *options, command=command), env={**setup.env, **(env or {})},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.next_id = 0
        self.buffer = b""
        self.seen: list[dict[str, Any]] = []  # every message the gateway wrote

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        self.send(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}).encode())
        return self.read_until(lambda m: m.get("id") == self.next_id, timeout)

    def read_until(self, done: Any, timeout: float = 30) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = json.loads(line)
                self.seen.append(message)
                if done(message):
                    return message
            left = deadline - time.monotonic()
            assert left > 0, "no answer from the gateway in time"
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 1 << 20)
                assert chunk, f"the gateway closed stdout: {self.stderr()}"
                self.buffer += chunk

    def handshake(self) -> None:
        r = self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                        "clientInfo": {"name": "raw", "version": "0"}})
        assert "result" in r, r
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def call(self, tool: str, arguments: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.request("tools/call", {"name": tool, "arguments": arguments or {}}, timeout)

    def credentials(self) -> dict[str, Any]:
        r = self.call("credentials")
        assert not r["result"].get("isError"), r
        return r["result"]["structuredContent"]

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


@pytest.mark.parametrize("ending", ["stdin closed", "SIGTERM", "server killed"])
def test_credentials_are_in_the_server_only_and_revoked_when_the_gateway_ends(setup: Setup, ending: str) -> None:
    gw = RawGateway(setup)
    gw.handshake()
    given = gw.credentials()
    assert given["env"] and given["file"] and given["env"] != given["file"]
    assert "GITHUB_TOKEN" not in os.environ and given["env"] not in json.dumps(setup.env)
    for secret in (given["env"], given["file"]):
        assert setup.introspect(secret)["active"] is True
    st = os.stat(os.path.join(given["directory"], "token.txt"))
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == setup.agent.uid
    assert os.stat(given["directory"]).st_mode & 0o777 == 0o700

    if ending == "stdin closed":
        assert gw.process.stdin is not None
        gw.process.stdin.close()
        assert gw.wait() == 0
    elif ending == "SIGTERM":
        gw.process.send_signal(signal.SIGTERM)
        assert gw.wait() == 0
    else:
        os.kill(given["pid"], signal.SIGKILL)
        assert gw.wait() == 1
    for secret in (given["env"], given["file"]):
        assert setup.introspect(secret)["active"] is False, ending
    assert not os.path.exists(given["directory"])


def test_a_short_lease_restarts_the_server_between_calls(setup: Setup) -> None:
    gw = RawGateway(setup, "rec-short")
    gw.handshake()
    first = gw.credentials()
    deadline = time.monotonic() + 30
    latest = first
    while latest["env"] == first["env"]:
        assert time.monotonic() < deadline, "the server was not restarted with a fresh lease"
        r = gw.call("read", {"path": "/srv/x"})
        assert "result" in r, r
        assert r["result"]["content"][0]["text"] == "contents of /srv/x", r
        latest = gw.credentials()
    assert latest["pid"] != first["pid"]
    assert setup.introspect(latest["env"])["active"] is True
    assert setup.introspect(first["env"])["active"] is False
    gw.process.send_signal(signal.SIGTERM)
    assert gw.wait() == 0


# Acceptance 4: hostile traffic.

def test_hostile_client_lines_leave_the_gateway_up(setup: Setup) -> None:
    gw = RawGateway(setup)
    gw.handshake()
    gw.send(b"{not json")
    bad = gw.read_until(lambda m: "error" in m)
    assert bad["id"] is None and bad["error"]["code"] == -32700
    gw.send(b'{"x":"' + b"y" * (10 << 20) + b'"}')
    big = gw.read_until(lambda m: "error" in m)
    assert big["id"] is None and "max-line-bytes" in big["error"]["message"]
    # Where JSON parsers disagree (duplicate names: the first or the last wins), the gateway
    # could decide one call and the server run another: such messages are refused.
    gw.send(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read","name":"secret","arguments":{}}}')
    dup = gw.read_until(lambda m: "error" in m)
    assert dup["error"]["code"] == -32700 and "duplicate member names" in dup["error"]["message"], dup
    gw.send(b'{"jsonrpc":"2.0","id":8,"method":"ping","method":"tools/call","params":{"name":"secret","arguments":{}}}')
    assert gw.read_until(lambda m: "error" in m)["error"]["code"] == -32700
    gw.send(b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read","arguments":{"path":"\\ud800"}}}')
    assert gw.read_until(lambda m: "error" in m)["error"]["code"] == -32700
    gw.send(b'[{"jsonrpc":"2.0","id":"b1","method":"ping"}]')
    batch = gw.read_until(lambda m: m.get("id") == "b1")
    assert "batch" in batch["error"]["message"]
    assert gw.call("read", {"path": "/srv/ok"})["result"]["content"][0]["text"] == "contents of /srv/ok"
    assert [c["tool"] for c in setup.calls()] == ["read"]
    assert gw.process.poll() is None
    gw.process.send_signal(signal.SIGTERM)
    assert gw.wait() == 0


def test_messages_the_server_would_read_otherwise_are_refused(setup: Setup) -> None:
    """The attacks of the review: a carriage return hides a second message from the gateway
    (a Python reader breaks lines there); ids of other types; each leaves the server unaware."""
    gw = RawGateway(setup)
    gw.handshake()
    hidden = b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"secret","arguments":{}}}'
    gw.send(b'{"jsonrpc":"2.0","id":20,"method":"ping","params":{"x":\r' + hidden + b'\r}}')
    for bad_id in (b"null", b'{"a":1}', b"[1]", b"1.5"):
        gw.send(b'{"jsonrpc":"2.0","id":' + bad_id + b',"method":"tools/call","params":{"name":"secret","arguments":{}}}')
        refused = gw.read_until(lambda m: "error" in m and m["id"] is None)
        assert "string or an integer" in refused["error"]["message"], refused
    gw.send(b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"secret","arguments":{}}}')
    gw.read_until(lambda m: "error" in m and m["id"] is None)
    # The server reads in order: once it answered this, it had read everything before.
    assert gw.call("read", {"path": "/srv/after"})["result"]["content"][0]["text"] == "contents of /srv/after"
    assert [c["tool"] for c in setup.calls()] == ["read"], setup.calls()
    assert [r["mcp_tool"] for r in tool_records(setup.daemon)] == ["read"]
    gw.process.send_signal(signal.SIGTERM)
    assert gw.wait() == 0


def test_a_restarted_server_that_never_answers_ends_the_gateway_and_its_leases(setup: Setup) -> None:
    marker = os.path.join(setup.workdir, "first-run-done")
    gw = RawGateway(setup, "hostile-short", command=HOSTILE, env={"HOSTILE_MARKER": marker})
    gw.handshake()
    first = gw.call("credentials")["result"]["content"][0]["text"]
    assert first and setup.introspect(first)["active"] is True
    # The restart before the lease ends starts a server that never answers initialize.
    assert gw.wait(timeout=60) == 1
    assert "cannot restart the MCP server" in gw.stderr()
    records = setup.daemon.audit()
    provisioned = [r["lease_id"] for r in records if r["event"] == "provision" and r["outcome"] == "issued"]
    revoked = {r["lease_id"] for r in records if r["event"] == "revoke"}
    assert len(provisioned) == 2 and set(provisioned) <= revoked, records


def test_a_server_writing_garbage_or_never_answering_leaves_the_client_answered(setup: Setup) -> None:
    gw = RawGateway(setup, "hostile", "--call-timeout-seconds", "2", command=HOSTILE)
    gw.handshake()
    listed = gw.request("tools/list")
    assert [t["name"] for t in listed["result"]["tools"]] == ["read", "hang"]
    hang = gw.call("hang")
    assert hang["error"]["code"] == -32001 and "did not answer" in hang["error"]["message"], hang
    assert gw.call("read")["result"]["content"][0]["text"] == "read ok"
    # Answers to requests nobody made, and messages hidden behind a carriage return, never reach the client.
    assert not [m for m in gw.seen if m.get("id") in ("forged", "hidden")], gw.seen
    assert gw.process.poll() is None
    gw.process.send_signal(signal.SIGTERM)
    assert gw.wait() == 0
