"""Acceptance 1: 100 calls in flight on one AsyncClient connection, answered out of order
and each matched to its own call."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

from lanyard_harness import Channel, Daemon, User, run_as

import lanyard
from lanyard import ApprovalState

LONG_POLLS = 5
CALLS = 100


def token_audience(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["aud"]


def pipelined(path: str, channel: Channel) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        async with lanyard.AsyncClient(path) as c:
            pending = [await c.authorize("github:push", resource=f"org/repo-{i}") for i in range(LONG_POLLS)]
            connection = c._connection
            done_order: list[int] = []
            tasks = []
            # Sent in this order: the long polls first, then the quick calls behind them.
            for i in range(CALLS):
                call = (c.await_approval(pending[i].approval_id, wait=30) if i < LONG_POLLS
                        else c.issue_identity(f"aud-{i}", ttl=60))
                task = asyncio.ensure_future(call)
                task.add_done_callback(lambda _, i=i: done_order.append(i))
                tasks.append(task)
            await asyncio.sleep(0)  # one turn: every task has sent its request (nothing in a send waits)
            sent = len(connection.pending) + sum(t.done() for t in tasks)
            await asyncio.wait(tasks[LONG_POLLS:])
            polls_done_early = sum(t.done() for t in tasks[:LONG_POLLS])
            channel.tell_test(" ".join(p.approval_id for p in pending))  # the quick ones are answered
            results = await asyncio.gather(*tasks)
            return {"pending": pending, "results": results, "order": done_order, "early": polls_done_early, "sent": sent,
                    "one_connection": c._connection is connection}
    return asyncio.run(body())


def test_100_calls_in_flight_are_answered_out_of_order_and_matched(daemon: Daemon, agent_user: User,
                                                                    approver_user: User) -> None:
    channel = Channel()
    result: dict[str, Any] = {}
    child = threading.Thread(target=lambda: result.update(out=run_as(agent_user, pipelined, daemon.agent_socket, channel)))
    child.start()
    ids = channel.from_child(timeout=60).split()
    for approval_id in ids:
        daemon.ctl_ok(["approvals", "approve", approval_id], as_user=approver_user)
    child.join(60)
    out = result["out"]

    assert out["one_connection"] and len(out["results"]) == CALLS and out["sent"] == CALLS
    # Every quick call was answered before any long poll sent ahead of it: out of order.
    assert out["early"] == 0 and set(out["order"][-LONG_POLLS:]) == set(range(LONG_POLLS))
    # Each answer is its own call's: the token names the audience that call asked for ...
    for i, token in enumerate(out["results"][LONG_POLLS:], start=LONG_POLLS):
        assert token_audience(token.token) == f"aud-{i}"
    # ... and each long poll reports its own approval, with that approval's binding code.
    for pending, status in zip(out["pending"], out["results"][:LONG_POLLS]):
        assert status.state is ApprovalState.APPROVED and status.binding_code == pending.binding_code
    assert len({p.binding_code for p in out["pending"]}) == LONG_POLLS
