"""What the adapter tests share: a daemon, three tools, their rules, and an approver who approves.

Each test runs a framework's real agent loop, with the framework's offline test model, as
a created agent uid against a real lanyardd (the harness's `run_as`). Three calls:
`read_file` (LOW: allowed), `delete` (not granted: denied) and `push` (MEDIUM: held for
approval, approved by the approver uid with `lanyardctl approvals approve`).

Test modules import the `daemon` fixture (`adapter_daemon`) from here: no conftest.py,
since the SDK's tests import their own `conftest` by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from lanyard_harness import Daemon, User, policy_for, run_as

import lanyard
from lanyard.adapters import ToolRule

ALLOWED = ("read_file", {"path": "README.md"})
DENIED = ("delete", {"path": "README.md"})
HELD = ("push", {"branch": "main", "force": False})

UNREACHABLE = "/nonexistent/agent.sock"
"""A socket no daemon listens on: every adapter must refuse the call."""

RULES = {
    "read_file": "repo:read",
    "delete": "repo:delete",
    "push": ToolRule("repo:push", resource=lambda arguments: arguments["branch"]),
}

# What the daemon's approval must show for HELD: the capability, resource and the args
# canonicalised (a JSON false becomes "false").
HELD_APPROVAL = {"capabilities": ["repo:push"], "resource": "main", "args": {"branch": "main", "force": "false"}}


@pytest.fixture(name="daemon")
def adapter_daemon(daemon_factory: Callable[..., Daemon], agent_user: User, approver_user: User) -> Daemon:
    """A lanyardd where the agent may read (LOW) and push (MEDIUM), and may not delete."""
    return daemon_factory(policy_for(
        {"adapter": (agent_user, ["repo:read", "repo:push"])},
        capabilities={"repo:read": "low", "repo:push": "medium", "repo:delete": "low"},
        services={"repo": "{ kind: opaque }"},
        approvers=[approver_user],
    ))


class Repo:
    """The tools' bodies. Each records that it ran, so a test can tell that a denied
    body never did."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def read_file(self, path: str) -> str:
        self.ran.append(("read_file", {"path": path}))
        return f"contents of {path}"

    def delete(self, path: str) -> str:
        self.ran.append(("delete", {"path": path}))
        return f"deleted {path}"

    def push(self, branch: str, force: bool) -> str:
        self.ran.append(("push", {"branch": branch, "force": force}))
        return f"pushed {branch}"


def daemon_reason(daemon: Daemon, agent: User, capability: str) -> str:
    """The reason lanyardd itself gives the agent for denying ``capability``."""

    def ask() -> str:
        with lanyard.Client(daemon.agent_socket) as client:
            decision = client.authorize(capability)
        assert decision.denied, decision
        return decision.reason

    return run_as(agent, ask)


def run_with_approval(
    daemon: Daemon, agent: User, approver: User, func: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, dict[str, Any]]:
    """Runs ``func(*args, **kwargs)`` as ``agent`` while ``approver`` approves the first
    approval it opens (seen with the admin long poll, approved with `lanyardctl approvals
    approve`). Returns func's result and the approval as the approver saw it."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_as, agent, func, *args, **kwargs)
        approval = daemon.next_approval(as_user=approver, timeout=60)
        daemon.ctl_ok(["approvals", "approve", approval["approval_id"]], as_user=approver)
        return running.result(timeout=120), approval


def approvals(daemon: Daemon) -> list[dict[str, Any]]:
    """Every approval the daemon opened, decided or not (`lanyardctl approvals list --all`)."""
    return list(json.loads(daemon.ctl_ok(["approvals", "list", "--all", "--json"])))


def approval_state(daemon: Daemon, approval_id: str) -> str:
    """The approval's state now."""
    [state] = [a["state"] for a in approvals(daemon) if a["approval_id"] == approval_id]
    return str(state)


def assert_held_approval(approval: dict[str, Any]) -> None:
    """The approver was shown exactly the call that then ran."""
    assert {key: approval[key] for key in HELD_APPROVAL} == HELD_APPROVAL
    assert approval["state"] == "PENDING"
