"""Shared pytest fixtures for every Python test of the repository: real `lanyardd`
processes on temp sockets, created uids, and code run as those uids.

Loaded for every suite by the root pytest.ini (`-p lanyard_harness`, `pythonpath`).
Tests need root (to create uids and switch to them); without it they skip.

    from lanyard_harness import policy_for, run_as

    def test_push_needs_a_human(daemon_factory, agent_user, approver_user):
        d = daemon_factory(policy_for({"a": (agent_user, ["github:push"])}, capabilities={"github:push": "medium"},
                                      services={"github": "{ kind: opaque }"}, approvers=[approver_user]))
        auth = run_as(agent_user, lambda: lanyard.Client(d.agent_socket).authorize("github:push"))
        d.ctl_ok(["approvals", "approve", auth.approval_id], as_user=approver_user)
        assert [r["event"] for r in d.audit()][-1] == "approval.approve"

- `Daemon(policy, extra_args=())` (extra lanyardd flags, e.g. limits): `start()`, `stop()`
  (SIGTERM), `kill()` (SIGKILL), `restart()` (same state dir and key), `agent_socket`,
  `admin_socket`, `dir`, `state_dir`, `env` (LANYARD_SOCKET, LANYARD_ADMIN_SOCKET),
  `ctl(args, as_user=None, stdin=None)` and `ctl_ok(...)` (lanyardctl against it; None:
  root, an admin), `audit()` (`audit export` as dicts), `log()` (its stderr, shown when a
  test fails), `wait_for_log(text)`, `next_approval(as_user)` (waits for a pending one).
- `policy_for(agents, capabilities=, services=, approvers=)`: a policy YAML.
- `user(name)`: a system user (created with useradd when missing) as a `User`.
- `run_as(user, func, *args, timeout=...)`: calls `func` in a forked child that has
  switched to the user's uid and gid (no supplementary groups); returns its result or
  re-raises its exception (both pickled back).
- `Channel()`: words passed between a test and its `run_as` child, to step through a scenario.
- `command_as(user, argv, ...)`: runs a program as the user (subprocess, env of your choice).
- `bin_dir()`: `$LANYARD_BIN_DIR`, else `.build/debug` of the repository.
- Fixtures: `root` (skips unless root), `agent_user`, `approver_user`, `stranger_user`
  (an uid no policy names), `daemon_factory` (starts daemons, stops them after the test).
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT = 60.0


def bin_dir() -> str:
    return os.environ.get("LANYARD_BIN_DIR") or os.path.join(ROOT, ".build", "debug")


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def user(name: str) -> User:
    """The system user `name`, created (no home, no login shell) when missing. Needs root."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


def _become(u: User) -> None:
    os.setgroups([])
    os.setresgid(u.gid, u.gid, u.gid)
    os.setresuid(u.uid, u.uid, u.uid)


# Held from a run_as pipe's creation until the parent closed its write end, so a child
# forked by another thread never inherits it (the parent would then wait for that child).
_FORK_LOCK = threading.Lock()


def run_as(u: User, func: Callable[..., Any], *args: Any, timeout: float = 120.0, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)` in a forked child running as `u`; its result, or its exception re-raised."""
    with _FORK_LOCK:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read_end)
            _child(u, write_end, func, args, kwargs)
        os.close(write_end)
    try:
        data = _read_message(read_end, timeout, pid)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if data is None:
        raise RuntimeError(f"the child running as {u.name} died without an answer (wait status {status})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def _child(u: User, write_end: int, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        _become(u)
        outcome: tuple[bool, Any] = (True, func(*args, **kwargs))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        e.__traceback__ = None
        outcome = (False, e) if _picklable(e) else (False, RuntimeError(traceback.format_exc()))
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps((False, RuntimeError("the result does not pickle: " + repr(outcome[1])[:500])))
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(len(data).to_bytes(8, "big") + data)
    os._exit(0)


def _picklable(e: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:
        return False


def _read_message(fd: int, timeout: float, pid: int) -> bytes | None:
    """The child's length-prefixed answer (None if it exited without one)."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < 8 or len(data) < 8 + int.from_bytes(data[:8], "big"):
        left = deadline - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(left, 0))
        if not readable:
            os.kill(pid, 9)
            raise TimeoutError(f"the child did not finish within {timeout} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        data += chunk
    return data[8:]


class Channel:
    """Two pipes between a test and its `run_as` child, made before the fork: each side
    says a word and the other waits for it (with a deadline), to step through a scenario
    (e.g. the child connects, the test restarts the daemon, the child calls again)."""

    def __init__(self) -> None:
        self._up = os.pipe()
        self._down = os.pipe()

    def tell_test(self, word: str) -> None:
        os.write(self._up[1], word.encode() + b"\n")

    def tell_child(self, word: str) -> None:
        os.write(self._down[1], word.encode() + b"\n")

    def from_child(self, timeout: float = 30.0) -> str:
        return _read_line(self._up[0], timeout)

    def from_test(self, timeout: float = 30.0) -> str:
        return _read_line(self._down[0], timeout)


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise TimeoutError(f"no word from the other side within {timeout} s")
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("the other side closed the channel")
        line += byte
    return line.decode().rstrip("\n")


def command_as(u: User | None, argv: Sequence[str], *, env: dict[str, str] | None = None, stdin: str | None = None,
               timeout: float = 120.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `argv` (no shell) as `u` (None: as this process), output captured as text."""
    extra: dict[str, Any] = {}
    if u is not None and u.uid != os.geteuid():
        extra = dict(user=u.uid, group=u.gid, extra_groups=[])
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd, **extra)


class Daemon:
    """A real lanyardd on temp sockets with a temp state dir, a generated key and `policy`."""

    def __init__(self, policy: str, extra_args: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="lanyard-py.")
        os.chmod(self.dir, 0o755)  # test uids reach the sockets inside
        self.state_dir = os.path.join(self.dir, "state")
        self.policy_path = os.path.join(self.dir, "policy.yaml")
        self.agent_socket = os.path.join(self.dir, "agent.sock")
        self.admin_socket = os.path.join(self.dir, "admin.sock")
        self.key_path = os.path.join(self.dir, "master.key")
        self._log = ""
        self._log_changed = threading.Condition()
        self._stderr_closed = False
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.write_policy(policy)
        subprocess.run([os.path.join(bin_dir(), "lanyardd"), "keygen", "--out", self.key_path],
                       check=True, capture_output=True)

    @property
    def env(self) -> dict[str, str]:
        return {"LANYARD_SOCKET": self.agent_socket, "LANYARD_ADMIN_SOCKET": self.admin_socket}

    def write_policy(self, policy: str) -> None:
        with open(self.policy_path, "w") as f:
            f.write(policy)

    def start(self) -> Daemon:
        """Starts the daemon and returns once it logs that it is ready."""
        argv = [os.path.join(bin_dir(), "lanyardd"), *self.extra_args, "--policy", self.policy_path,
                "--state-dir", self.state_dir, "--agent-socket", self.agent_socket,
                "--admin-socket", self.admin_socket, "--admin-socket-mode", "0666", "--admin-group", "",
                "--master-key-file", self.key_path]
        self._stderr_closed = False
        mark = self._log_mark()  # before the drain thread can append this run's "ready"
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # A thread drains stderr into the log (a daemon blocked on a full pipe stalls every peer).
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        if not self.wait_for_log("lanyardd ready", START_TIMEOUT, since=mark):
            self.stop()
            raise RuntimeError(f"lanyardd did not become ready:\n{self.log()}")
        return self

    def _drain(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self._log_changed:
                self._log += line.decode(errors="replace")
                self._log_changed.notify_all()
        with self._log_changed:
            if process is self.process:  # not a stopped one's drain ending after a restart
                self._stderr_closed = True
            self._log_changed.notify_all()

    def _log_mark(self) -> int:
        with self._log_changed:
            return len(self._log)

    def wait_for_log(self, text: str, timeout: float = 10.0, since: int = 0) -> bool:
        """Whether the daemon logs `text` (after the first `since` characters) within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while text not in self._log[since:]:
                left = deadline - time.monotonic()
                if left <= 0 or self._stderr_closed:
                    return False
                self._log_changed.wait(left)
            return True

    def log(self) -> str:
        """Everything the daemon wrote to stderr, across restarts."""
        with self._log_changed:
            return self._log

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        p, self.process = self.process, None
        if p is None:
            return 0
        p.terminate()
        try:
            return p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def kill(self) -> None:
        """SIGKILL and wait: a crash, every connection cut at once."""
        p, self.process = self.process, None
        if p is not None:
            p.kill()
            p.wait()

    def restart(self) -> Daemon:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctl(self, args: Sequence[str], *, as_user: User | None = None, stdin: str | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`lanyardctl ARGS` against this daemon's sockets, as `as_user` (None: root, an admin)."""
        return command_as(as_user, [os.path.join(bin_dir(), "lanyardctl"), *args], env=self.env, stdin=stdin,
                          timeout=timeout)

    def ctl_ok(self, args: Sequence[str], **options: Any) -> str:
        """`ctl`, asserting exit status 0; its stdout."""
        r = self.ctl(args, **options)
        assert r.returncode == 0, f"lanyardctl {' '.join(args)} exited {r.returncode}: {r.stderr}"
        return r.stdout

    def audit(self) -> list[dict[str, Any]]:
        """The audit log, one dict per record (`lanyardctl audit export`)."""
        return [json.loads(line) for line in self.ctl_ok(["audit", "export"]).splitlines() if line.strip()]

    def next_approval(self, as_user: User | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """The newest pending approval, waiting for one: the admin socket's ApprovalsList long
        poll (what `lanyardctl approvals watch` uses), as `as_user` (None: root)."""
        from lanyard.v1 import admin_pb2
        deadline = time.monotonic() + timeout
        version = 0
        while (left := deadline - time.monotonic()) > 0:
            request = admin_pb2.AdminRequest(id=1, approvals_list=admin_pb2.ApprovalsListRequest(
                wait_ms=int(min(left, 30.0) * 1000), since_version=version))
            reply = run_as(as_user, _admin_call, self.admin_socket, request) if as_user else _admin_call(self.admin_socket, request)
            if reply.status.code != 0:
                raise RuntimeError(f"ApprovalsList failed: {reply.status.message}")
            if reply.approvals_list.approvals:
                return _approval_dict(reply.approvals_list.approvals[0])
            version = reply.approvals_list.version
        raise TimeoutError(f"no pending approval within {timeout} s")


def _admin_call(path: str, request: Any) -> Any:
    """One AdminRequest on the admin socket; its AdminResponse."""
    from lanyard.v1 import admin_pb2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        body = request.SerializeToString()
        s.sendall(len(body).to_bytes(4, "big") + body)
        n = int.from_bytes(_recv_exactly(s, 4), "big")
        return admin_pb2.AdminResponse.FromString(_recv_exactly(s, n))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("lanyardd closed the admin connection")
        data += chunk
    return data


def _approval_dict(a: Any) -> dict[str, Any]:
    """An Approval as `lanyardctl approvals list --json` shows it (the fields tests read)."""
    from lanyard.v1 import common_pb2
    return {"approval_id": a.approval_id, "state": common_pb2.ApprovalState.Name(a.state).removeprefix("APPROVAL_STATE_"),
            "agent": a.agent, "uid": a.uid, "pid": a.pid, "exe": a.exe, "capabilities": list(a.capabilities),
            "resource": a.resource, "args": dict(a.args), "binding_code": a.binding_code}


def policy_for(agents: dict[str, tuple[User, Sequence[str]]], *, capabilities: dict[str, str],
               services: dict[str, str], approvers: Sequence[User] = (), extra: str = "") -> str:
    """A policy YAML: `agents` name → (user, grants); `capabilities` name → risk;
    `services` name → its flow mapping (e.g. "{ kind: opaque }")."""
    lines = ["trust_domain: py.internal"]
    if approvers:
        lines.append(f"approvers: {{ uids: [{', '.join(str(a.uid) for a in approvers)}] }}")
    lines.append("services:")
    lines += [f"  {name}: {spec}" for name, spec in services.items()]
    lines.append("capabilities:")
    lines += [f"  {name}: {{ risk: {risk} }}" for name, risk in capabilities.items()]
    lines.append("agents:")
    for name, (u, grants) in agents.items():
        lines.append(f"  {name}: {{ uid: {u.uid}, grants: [{', '.join(grants)}] }}")
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def root() -> None:
    if not is_root():
        pytest.skip("needs root: creates agent and approver uids and switches to them")
    if not os.access(os.path.join(bin_dir(), "lanyardd"), os.X_OK):
        pytest.fail(f"no lanyardd in {bin_dir()}: build it (swift build --product lanyardd) or set LANYARD_BIN_DIR")


@pytest.fixture
def agent_user(root: None) -> User:
    return user("lanyard-test-a")


@pytest.fixture
def approver_user(root: None) -> User:
    return user("lanyard-test-b")


@pytest.fixture
def stranger_user(root: None) -> User:
    return user("lanyard-test-c")


@pytest.fixture
def daemon_factory(root: None) -> Iterator[Callable[..., Daemon]]:
    """`daemon_factory(policy, extra_args=())` → a started Daemon, stopped and removed after the test."""
    started: list[Daemon] = []

    def start(policy: str, extra_args: Sequence[str] = ()) -> Daemon:
        d = Daemon(policy, extra_args)
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.stop()
        # Captured by pytest and shown only when the test failed.
        print(f"--- lanyardd log ({d.dir}) ---\n{d.log()[-20000:]}")
        d.cleanup()
