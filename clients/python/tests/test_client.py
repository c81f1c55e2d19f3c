"""Acceptance 1: every call, typed errors, reconnect, the frame cap, against real lanyardd
processes, with the agent's code running as a created uid."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from typing import Any

import pytest
from lanyard_harness import Daemon, User, policy_for, run_as

import lanyard
from lanyard import (ApprovalState, Decision, Risk)
from lanyard.v1 import agent_pb2, common_pb2


def every_call_sync(path: str) -> dict[str, Any]:
    with lanyard.Client(path) as c:
        out: dict[str, Any] = {"hello": c.hello(client="pytest"), "whoami": c.whoami()}
        out["allow"] = c.authorize("github:read_repo", resource="org/repo", args={"ref": "main"})
        out["deny"] = c.authorize("github:delete")
        out["pending"] = c.authorize("github:push", resource="org/repo")
        out["dry_run"] = c.authorize("github:push", resource="org/repo", dry_run=True)
        out["await"] = c.await_approval(out["pending"].approval_id, wait=0)
        lease = c.provision("github", scope=["github:read_repo"], ttl=60)
        out["lease"] = lease
        out["list"] = c.list_leases("github")
        out["introspect_active"] = c.introspect(lease.secret)
        out["revoke"] = c.revoke(lease.lease_id)
        out["introspect_revoked"] = c.introspect(lease.secret)
        out["list_after"] = c.list_leases()
        out["rotate"] = c.rotate("github")
        token = c.issue_identity("billing-agent", capabilities=["github:read_repo"], ttl=60)
        out["token"] = token
        out["valid"] = c.validate_identity(token.token, "billing-agent")
        out["wrong_audience"] = c.validate_identity(token.token, "someone-else")
        return out


async def every_call_async_body(path: str) -> dict[str, Any]:
    async with lanyard.AsyncClient(path) as c:
        out: dict[str, Any] = {"hello": await c.hello(client="pytest"), "whoami": await c.whoami()}
        out["allow"] = await c.authorize("github:read_repo", resource="org/repo", args={"ref": "main"})
        out["deny"] = await c.authorize("github:delete")
        out["pending"] = await c.authorize("github:push", resource="org/repo")
        out["dry_run"] = await c.authorize("github:push", resource="org/repo", dry_run=True)
        out["await"] = await c.await_approval(out["pending"].approval_id, wait=0)
        lease = await c.provision("github", scope=["github:read_repo"], ttl=60)
        out["lease"] = lease
        out["list"] = await c.list_leases("github")
        out["introspect_active"] = await c.introspect(lease.secret)
        out["revoke"] = await c.revoke(lease.lease_id)
        out["introspect_revoked"] = await c.introspect(lease.secret)
        out["list_after"] = await c.list_leases()
        out["rotate"] = await c.rotate("github")
        token = await c.issue_identity("billing-agent", capabilities=["github:read_repo"], ttl=60)
        out["token"] = token
        out["valid"] = await c.validate_identity(token.token, "billing-agent")
        out["wrong_audience"] = await c.validate_identity(token.token, "someone-else")
        return out


def every_call_async(path: str) -> dict[str, Any]:
    return asyncio.run(every_call_async_body(path))


@pytest.mark.parametrize("body", [every_call_sync, every_call_async], ids=["Client", "AsyncClient"])
def test_every_call(daemon: Daemon, agent_user: User, body: Any) -> None:
    out = run_as(agent_user, body, daemon.agent_socket)
    assert out["hello"].server_version and out["hello"].protocol_version >= 1
    me = out["whoami"]
    assert (me.authenticated, me.agent, me.uid, me.uri) == (True, "a", agent_user.uid, "spiffe://py.internal/agent/a")
    assert lanyard.Grant("github:push", Risk.MEDIUM) in me.grants
    assert out["allow"].allowed and out["allow"].risk is Risk.LOW
    assert out["deny"].denied and "github:delete" in out["deny"].reason
    pending = out["pending"]
    assert pending.pending and pending.risk is Risk.MEDIUM and pending.approval_id and pending.binding_code
    assert pending.approval_expires_at > 0
    assert (out["allow"].reason_code, out["deny"].reason_code, pending.reason_code) == ("granted", "not_granted", "needs_approval")
    assert out["allow"].path == lanyard.DecisionPath("github:read_repo", Risk.LOW, "catalog", Risk.LOW)
    assert out["deny"].path is None and not pending.dry_run
    dry = out["dry_run"]
    assert dry.pending and dry.dry_run and dry.reason_code == "needs_approval" and dry.approval_id == ""
    assert out["await"].state is ApprovalState.PENDING and out["await"].binding_code == pending.binding_code
    lease = out["lease"]
    assert lease.service == "github" and lease.kind == "opaque" and lease.scope == ("github:read_repo",)
    assert lease.expires_at - lease.issued_at == 60 and lease.secret
    assert "secret" not in repr(lease) and lease.secret not in repr(lease)
    assert [x.lease_id for x in out["list"]] == [lease.lease_id]
    active = out["introspect_active"]
    assert active.active and active.lease_id == lease.lease_id and active.agent == "a" and active.decision is Decision.ALLOW
    assert out["revoke"] is True
    assert not out["introspect_revoked"].active
    assert out["list_after"] == []
    assert out["rotate"].version >= 1
    token = out["token"]
    assert token.expires_at > 0 and token.token not in repr(token)
    claims = json.loads(base64.urlsafe_b64decode(token.token.split(".")[1] + "=="))
    assert claims["aud"] == "billing-agent" and claims["capabilities"] == ["github:read_repo"]
    valid = out["valid"]
    assert valid.valid and valid.claims is not None and valid.claims.sub == "spiffe://py.internal/agent/a"
    assert valid.claims.capabilities == ("github:read_repo",) and valid.claims.aud == "billing-agent"
    assert not out["wrong_audience"].valid and out["wrong_audience"].failed_check == "aud"


def test_an_unknown_uid_is_unauthenticated_for_every_call(daemon: Daemon, stranger_user: User) -> None:
    def body() -> list[Any]:
        with lanyard.Client(daemon.agent_socket) as c:
            errors = []
            for call in (c.whoami, lambda: c.authorize("github:read_repo"), lambda: c.provision("github"),
                         lambda: c.issue_identity("billing-agent"), lambda: c.list_leases()):
                with pytest.raises(lanyard.Unauthenticated) as e:
                    call()
                errors.append(e.value)
            return errors

    errors = run_as(stranger_user, body)
    assert f"uid {stranger_user.uid}" in errors[0].message and len(errors) == 5
    assert all(e.code == common_pb2.CODE_UNAUTHENTICATED and e.response is not None for e in errors)


def test_each_code_the_daemon_returns_is_its_typed_error(daemon_factory: Any, agent_user: User) -> None:
    from conftest import sdk_policy
    d = daemon_factory(sdk_policy(agent_user), ["--max-leases-per-agent", "1"])

    def body() -> dict[str, BaseException]:
        out: dict[str, BaseException] = {}
        with lanyard.Client(d.agent_socket) as c:
            cases = {
                "permission": lambda: c.provision("github", scope=["github:delete"]),
                "invalid": lambda: c.provision("github", scope=["github:read_repo"], ttl=100_000),
                "not_found": lambda: c.revoke("no-such-lease"),
                "not_found_approval": lambda: c.await_approval("no-such-approval"),
                "approval": lambda: c.provision("github", scope=["github:push"]),
                "precondition": lambda: c.provision("openai", scope=["openai:chat"]),
                "exhausted": lambda: [c.provision("github", scope=["github:read_repo"]) for _ in range(2)],
            }
            for name, call in cases.items():
                try:
                    call()
                except lanyard.LanyardError as e:
                    out[name] = e
        try:
            lanyard.Client(d.dir + "/no-such.sock").whoami()
        except lanyard.LanyardError as e:
            out["unavailable"] = e
        return out

    out = run_as(agent_user, body)
    expected = {"permission": lanyard.PermissionDenied, "invalid": lanyard.InvalidArgument,
                "not_found": lanyard.NotFound, "not_found_approval": lanyard.NotFound,
                "approval": lanyard.ApprovalRequired, "precondition": lanyard.FailedPrecondition,
                "exhausted": lanyard.ResourceExhausted, "unavailable": lanyard.Unavailable}
    assert {k: type(v) for k, v in out.items()} == expected
    assert "github:delete" in out["permission"].message
    assert out["permission"].reason_code == "not_granted" and out["approval"].reason_code == "needs_approval"
    assert "900" in out["invalid"].message
    approval = out["approval"]
    assert isinstance(approval, lanyard.ApprovalRequired)
    assert approval.approval_id and approval.binding_code and approval.response.provision.approval_id == approval.approval_id
    assert not isinstance(out["precondition"], lanyard.ApprovalRequired)
    assert "no-such.sock" in out["unavailable"].message and "LANYARD_SOCKET" in out["unavailable"].message


def test_a_rate_limited_provision_says_why_and_when(daemon_factory: Any, agent_user: User) -> None:
    """A Provision over its grant's rate is ResourceExhausted with the reason code and the wait."""
    from conftest import CAPABILITIES, SERVICES
    d = daemon_factory(policy_for({"a": (agent_user, ["{ capability: github:read_repo, rate: 1/day }"])},
                                  capabilities=CAPABILITIES, services=SERVICES))

    def body() -> BaseException | None:
        with lanyard.Client(d.agent_socket) as c:
            c.provision("github", scope=["github:read_repo"])
            try:
                c.provision("github", scope=["github:read_repo"])
            except lanyard.LanyardError as e:
                return e
        return None

    refused = run_as(agent_user, body)
    assert isinstance(refused, lanyard.ResourceExhausted), refused
    assert refused.reason_code == "rate_limited" and 0 < refused.retry_after_seconds <= 86_400
    assert "rate limit 1/day reached" in refused.message


def test_a_connection_refused_by_the_daemon_fails_with_its_code(daemon_factory: Any, agent_user: User) -> None:
    """A refusal for the whole connection (id 0: too many connections) is the typed error."""
    from conftest import sdk_policy
    d = daemon_factory(sdk_policy(agent_user), ["--max-connections-per-uid", "1"])

    def body() -> tuple[Any, BaseException | None, Any]:
        async def second() -> Any:
            async with lanyard.AsyncClient(d.agent_socket) as c:
                return await c.whoami()

        with lanyard.Client(d.agent_socket) as first:
            me = first.whoami()
            try:
                asyncio.run(second())
                refused = None
            except lanyard.LanyardError as e:
                refused = e
            return me, refused, first.whoami()

    me, refused, again = run_as(agent_user, body)
    assert me.authenticated and again.authenticated
    assert isinstance(refused, lanyard.ResourceExhausted) and "too many connections" in refused.message


def test_error_mapping_covers_every_code() -> None:
    families = {
        "UNAUTHENTICATED": lanyard.Unauthenticated, "PERMISSION_DENIED": lanyard.PermissionDenied,
        "INVALID_ARGUMENT": lanyard.InvalidArgument, "OUT_OF_RANGE": lanyard.InvalidArgument,
        "NOT_FOUND": lanyard.NotFound, "RESOURCE_EXHAUSTED": lanyard.ResourceExhausted,
        "FAILED_PRECONDITION": lanyard.FailedPrecondition, "UNAVAILABLE": lanyard.Unavailable,
        "DEADLINE_EXCEEDED": lanyard.DeadlineExceeded, "INTERNAL": lanyard.Internal, "DATA_LOSS": lanyard.Internal,
        "UNKNOWN": lanyard.Internal,
    }
    from lanyard._errors import error_for
    import pickle
    for name, number in common_pb2.Code.items():
        if number == common_pb2.CODE_OK:
            continue
        response = agent_pb2.Response(id=1, status=common_pb2.Status(code=number, message="why"))
        e = error_for(response)
        assert type(e) is families.get(name.removeprefix("CODE_"), lanyard.LanyardError), name
        assert str(e) == f"{name.removeprefix('CODE_')}: why" and e.response is response
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and back.code == number and back.message == "why"
    needs = agent_pb2.Response(id=1, status=common_pb2.Status(code=common_pb2.CODE_FAILED_PRECONDITION, message="m"),
                               provision=agent_pb2.ProvisionResponse(approval_id="ap", binding_code="BC"))
    e = error_for(needs)
    assert isinstance(e, lanyard.ApprovalRequired) and (e.approval_id, e.binding_code) == ("ap", "BC")
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, lanyard.ApprovalRequired) and back.approval_id == "ap"


def test_a_call_with_no_answer_is_deadline_exceeded(tmp_path: Any) -> None:
    """The client's own timeout: a listener that accepts and never answers."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    with lanyard.Client(path, timeout=0.2) as c:
        with pytest.raises(lanyard.DeadlineExceeded):
            c.whoami()

    async def async_call() -> None:
        async with lanyard.AsyncClient(path, timeout=0.2) as c:
            await c.whoami()

    with pytest.raises(lanyard.DeadlineExceeded):
        asyncio.run(async_call())
    server.close()


def reconnect_sync(path: str, channel: Any) -> dict[str, Any]:
    with lanyard.Client(path) as c:
        first = c.whoami()
        channel.tell_test("connected")
        assert channel.from_test() == "restarted"
        restarted = c.whoami()
        pending = c.authorize("github:push")
        channel.tell_test("polling")
        try:
            c.await_approval(pending.approval_id, wait=30)
            broken: BaseException | None = None
        except lanyard.LanyardError as e:
            broken = e
        channel.tell_test("failed")
        assert channel.from_test() == "restarted"
        return {"first": first, "restarted": restarted, "broken": broken, "after": c.whoami(),
                "again": c.authorize("github:read_repo")}


def reconnect_async(path: str, channel: Any) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        async with lanyard.AsyncClient(path) as c:
            first = await c.whoami()
            channel.tell_test("connected")
            assert channel.from_test() == "restarted"  # blocks the loop: nothing else is to run
            restarted = await c.whoami()
            pending = await c.authorize("github:push")
            channel.tell_test("polling")
            try:
                await c.await_approval(pending.approval_id, wait=30)
                broken: BaseException | None = None
            except lanyard.LanyardError as e:
                broken = e
            channel.tell_test("failed")
            assert channel.from_test() == "restarted"  # blocks the loop: nothing else is to run
            return {"first": first, "restarted": restarted, "broken": broken, "after": await c.whoami(),
                    "again": await c.authorize("github:read_repo")}
    return asyncio.run(body())


@pytest.mark.parametrize("body", [reconnect_sync, reconnect_async], ids=["Client", "AsyncClient"])
def test_reconnects_on_the_next_call_after_a_daemon_restart(daemon: Daemon, agent_user: User, body: Any) -> None:
    from lanyard_harness import Channel
    channel = Channel()
    result: dict[str, Any] = {}
    child = threading.Thread(target=lambda: result.update(out=run_as(agent_user, body, daemon.agent_socket, channel)))
    child.start()
    assert channel.from_child() == "connected"
    daemon.restart()  # between calls: the idle connection is dead, the next call reconnects
    channel.tell_child("restarted")
    assert channel.from_child() == "polling"
    daemon.kill()  # under a call: the long poll fails at once, the next call reconnects
    assert channel.from_child(timeout=10) == "failed"
    daemon.start()
    channel.tell_child("restarted")
    child.join(60)
    out = result["out"]
    assert isinstance(out["broken"], lanyard.Unavailable)
    assert all(out[k].authenticated for k in ("first", "restarted", "after"))
    assert out["after"].pid == out["first"].pid and out["again"].allowed


def test_the_client_frame_cap(daemon_factory: Any, agent_user: User) -> None:
    """Refuses to send a frame over max_frame (the connection stays usable), and closes
    the connection on an announced length over it before reading the body; the daemon's
    own cap (--max-frame) answers RESOURCE_EXHAUSTED."""
    from conftest import sdk_policy
    d = daemon_factory(sdk_policy(agent_user), ["--max-frame", "2048"])
    big = {f"k{i}": "x" * 200 for i in range(12)}  # about 2.6 KB

    def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with lanyard.Client(d.agent_socket, max_frame=1024) as c:
            out["before"] = c.authorize("github:read_repo")
            with pytest.raises(lanyard.ResourceExhausted) as e:
                c.authorize("github:read_repo", args=big)
            out["refused"] = e.value
            out["after"] = c.authorize("github:read_repo")  # same connection: nothing was sent
            c.max_frame = 40  # every answer is larger now
            with pytest.raises(lanyard.Unavailable) as e2:
                c.whoami()
            out["oversized"] = e2.value
            c.max_frame = 65536
            out["reconnected"] = c.whoami()
        with lanyard.Client(d.agent_socket) as c:
            with pytest.raises(lanyard.ResourceExhausted) as e3:
                c.authorize("github:read_repo", args=big)
            out["daemon_cap"] = e3.value
            out["daemon_after"] = c.authorize("github:read_repo")

        async def async_body() -> None:
            async with lanyard.AsyncClient(d.agent_socket, max_frame=40) as ac:
                with pytest.raises(lanyard.ResourceExhausted):
                    await ac.authorize("github:read_repo", args=big)
                with pytest.raises(lanyard.Unavailable) as e4:
                    await ac.whoami()
                out["async_oversized"] = e4.value
                ac.max_frame = 65536
                out["async_reconnected"] = await ac.whoami()
        asyncio.run(async_body())
        return out

    out = run_as(agent_user, body)
    assert out["before"].allowed and out["after"].allowed
    assert "over this client's max_frame of 1024" in out["refused"].message
    assert "outside this client's 1...40" in out["oversized"].message
    assert out["reconnected"].authenticated and out["async_reconnected"].authenticated
    assert "outside this client's 1...40" in out["async_oversized"].message
    assert out["daemon_cap"].code == common_pb2.CODE_RESOURCE_EXHAUSTED and out["daemon_after"].allowed


def test_close_fails_calls_in_flight_and_a_later_call_reconnects(daemon: Daemon, agent_user: User,
                                                                 approver_user: User) -> None:
    def body() -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            c = lanyard.AsyncClient(daemon.agent_socket)
            pending = await c.authorize("github:push")
            poll = asyncio.ensure_future(c.await_approval(pending.approval_id, wait=30))
            await asyncio.sleep(0)  # let the poll be sent: one turn of the loop, not a wait for time
            await c.close()
            try:
                await poll
                closed: BaseException | None = None
            except lanyard.LanyardError as e:
                closed = e
            after = await c.whoami()
            await c.close()
            return {"closed": closed, "after": after, "approval_id": pending.approval_id}

        out = asyncio.run(run())
        sync = lanyard.Client(daemon.agent_socket)
        first = sync.whoami()
        sync.close()
        sync.close()  # closing twice is fine
        out["sync"] = (first, sync.whoami())
        sync.close()
        return out

    out = run_as(agent_user, body, timeout=20)
    # The daemon still holds the closed connection's long poll (a stop would wait for it): end it.
    daemon.ctl_ok(["approvals", "deny", out["approval_id"]], as_user=approver_user)
    assert isinstance(out["closed"], lanyard.Unavailable) and "closed" in out["closed"].message
    assert out["after"].authenticated and all(i.authenticated for i in out["sync"])


def test_one_client_shared_by_threads(daemon: Daemon, agent_user: User) -> None:
    """The blocking client serializes its calls: each thread gets its own call's answer."""
    def body() -> list[tuple[str, str]]:
        from concurrent.futures import ThreadPoolExecutor
        with lanyard.Client(daemon.agent_socket) as c, ThreadPoolExecutor(8) as pool:
            def one(i: int) -> tuple[str, str]:
                token = c.issue_identity(f"aud-{i}", ttl=60).token
                return f"aud-{i}", json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["aud"]
            return list(pool.map(one, range(40)))

    pairs = run_as(agent_user, body)
    assert len(pairs) == 40 and all(asked == got for asked, got in pairs)
