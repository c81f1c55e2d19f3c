"""Acceptance 2: require_capability (and the gates under it) against a real daemon; the
approver approves with `lanyardctl approvals approve` as its own uid."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import sdk_policy
from lanyard_harness import Daemon, User, run_as

import lanyard
from lanyard import ApprovalPending, UnauthorizedToolCall, require_capability


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs `func` on a thread (the agent child blocks while the test approves); its result in ["out"]."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = func()
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            box["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def joined(thread: threading.Thread, box: dict[str, Any]) -> Any:
    thread.join(90)
    if "error" in box:
        raise box["error"]
    return box["out"]


def approval_state(daemon: Daemon, approval_id: str) -> str:
    listed = json.loads(daemon.ctl_ok(["approvals", "list", "--all", "--json"]))
    return next(a["state"] for a in listed if a["approval_id"] == approval_id)


def sync_tools(path: str) -> dict[str, Any]:
    """LOW runs, ungranted raises with the daemon's reason (the body never runs), MEDIUM waits for the approver."""
    client = lanyard.Client(path)
    ran: list[str] = []

    @require_capability("github:read_repo", resource=lambda repo: repo, client=client)
    def read(repo: str) -> str:
        ran.append("read")
        return f"read {repo}"

    @require_capability("github:delete", resource=lambda repo: repo, client=client)
    def delete(repo: str) -> None:
        ran.append("delete")

    @require_capability("github:push", resource=lambda repo, branch: repo, args=lambda repo, branch: {"branch": branch},
                        client=client, wait=30)
    def push(repo: str, branch: str) -> str:
        ran.append("push")
        return f"pushed {branch}"

    out: dict[str, Any] = {"read": read("org/repo")}
    with pytest.raises(UnauthorizedToolCall) as denied:
        delete("org/repo")
    out["denied"] = denied.value
    out["push"] = push("org/repo", "main")  # waits for the approver
    with pytest.raises(ApprovalPending) as again:  # the same call again, not waiting this time
        require_capability("github:push", resource="org/repo", args={"branch": "main"}, client=client, wait=0)(
            push.__wrapped__)("org/repo", "main")
    out["again"] = again.value
    out["ran"] = ran
    client.close()
    return out


def async_tools(path: str) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        client = lanyard.AsyncClient(path)
        ran: list[str] = []

        @require_capability("github:read_repo", resource="org/repo", client=client)
        async def read() -> str:
            ran.append("read")
            return "read"

        @require_capability("github:delete", client=client)
        async def delete() -> None:
            ran.append("delete")

        @require_capability("github:push", resource="org/repo", args=lambda branch: {"branch": branch}, client=client,
                            wait=30)
        async def push(branch: str) -> str:
            ran.append("push")
            return f"pushed {branch}"

        out: dict[str, Any] = {"read": await read()}
        with pytest.raises(UnauthorizedToolCall) as denied:
            await delete()
        out["denied"] = denied.value
        out["push"] = await push("main")
        with pytest.raises(ApprovalPending) as again:
            await require_capability("github:push", resource="org/repo", args={"branch": "main"}, client=client,
                                     wait=0)(push.__wrapped__)("main")
        out["again"] = again.value
        out["ran"] = ran
        await client.close()
        return out
    return asyncio.run(body())


@pytest.mark.parametrize("tools", [sync_tools, async_tools], ids=["sync", "async"])
def test_low_runs_ungranted_raises_medium_waits_for_the_approver_once(daemon: Daemon, agent_user: User,
                                                                      approver_user: User, tools: Any) -> None:
    thread, box = in_thread(lambda: run_as(agent_user, tools, daemon.agent_socket))
    approval = daemon.next_approval(as_user=approver_user)
    assert approval["capabilities"] == ["github:push"] and approval["args"] == {"branch": "main"}
    assert approval["uid"] == agent_user.uid
    daemon.ctl_ok(["approvals", "approve", approval["approval_id"]], as_user=approver_user)
    out = joined(thread, box)

    assert out["read"].startswith("read")
    assert "github:delete" in out["denied"].reason and out["denied"].authorization.denied
    assert out["push"] == "pushed main"
    assert out["ran"] == ["read", "push"]  # delete never ran; push ran exactly once
    # The approval was consumed by that one call; the next call opened a new one.
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"
    assert out["again"].approval_id != approval["approval_id"] and out["again"].binding_code


def test_high_without_approvers_is_denied(daemon_factory: Any, agent_user: User) -> None:
    d = daemon_factory(sdk_policy(agent_user))  # no approvers

    def body() -> tuple[BaseException, list[str]]:
        ran: list[str] = []

        @require_capability("github:admin", resource="org/repo", client=lanyard.Client(d.agent_socket), wait=30)
        def admin() -> None:
            ran.append("admin")

        with pytest.raises(UnauthorizedToolCall) as e:
            admin()
        return e.value, ran

    error, ran = run_as(agent_user, body)
    assert ran == [] and error.authorization.denied and error.authorization.risk is lanyard.Risk.HIGH
    assert "approver" in error.reason


def test_args_changed_between_request_and_approval_are_refused_by_the_daemon(daemon: Daemon, agent_user: User,
                                                                             approver_user: User) -> None:
    """The human approves the args they were shown; the tool's args change before it runs
    (here, when the approval arrives): the daemon refuses the re-authorization, since the
    approval binds the args it showed, and the tool never runs."""

    def body() -> dict[str, Any]:
        cfg = {"branch": "main"}

        class ArgsChangeWhileWaiting(lanyard.Client):
            def await_approval(self, approval_id: str, *, wait: float = 0.0) -> lanyard.ApprovalStatus:
                status = super().await_approval(approval_id, wait=wait)
                cfg["branch"] = "release"
                return status

        client = ArgsChangeWhileWaiting(daemon.agent_socket)
        ran: list[dict[str, str]] = []

        @require_capability("github:push", resource="org/repo", args=lambda cfg: cfg, client=client, wait=30)
        def push(cfg: dict[str, str]) -> None:
            ran.append(dict(cfg))

        with pytest.raises(UnauthorizedToolCall) as e:
            push(cfg)
        # The explicit gate shows the same: the refused approval allows nothing else either.
        after = lanyard.ApprovalGate(client).decide("github:push", resource="org/repo", args={"branch": "main"})
        return {"error": e.value, "ran": ran, "after": after}

    thread, box = in_thread(lambda: run_as(agent_user, body))
    approval = daemon.next_approval(as_user=approver_user)
    assert approval["args"] == {"branch": "main"}
    daemon.ctl_ok(["approvals", "approve", approval["approval_id"]], as_user=approver_user)
    out = joined(thread, box)
    assert out["ran"] == []
    error = out["error"]
    assert error.authorization is not None and error.authorization.denied
    assert "github:push" in str(error) and "approv" in error.reason, error.reason
    assert out["after"].pending


def test_execute_with_approval_and_decide(daemon: Daemon, agent_user: User) -> None:
    def body() -> dict[str, Any]:
        with lanyard.Client(daemon.agent_socket) as c:
            out: dict[str, Any] = {"ran": lanyard.execute_with_approval("github:read_repo", lambda: "ran", client=c)}
            with pytest.raises(UnauthorizedToolCall):
                lanyard.execute_with_approval("github:delete", lambda: out.update(bad=True), client=c)
            gate = lanyard.ApprovalGate(c, wait=0)
            out["decide"] = gate.decide("github:push", resource="org/x")
            with pytest.raises(ApprovalPending) as e:
                gate.check("github:push", resource="org/y")
            out["pending"] = e.value

        async def abody() -> Any:
            async with lanyard.AsyncClient(daemon.agent_socket) as ac:
                async def work() -> str:
                    return "async ran"
                return (await lanyard.aexecute_with_approval("github:read_repo", work, client=ac),
                        await lanyard.ApprovalGate(ac).adecide("github:delete"))
        out["async"] = asyncio.run(abody())
        return out

    out = run_as(agent_user, body)
    assert out["ran"] == "ran" and "bad" not in out
    assert out["decide"].pending and out["decide"].approval_id
    assert out["pending"].binding_code and "lanyardctl approvals approve" in str(out["pending"])
    assert out["async"][0] == "async ran" and out["async"][1].denied
