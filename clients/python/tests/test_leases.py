"""Acceptance 3: the lease context manager (sync and async) and the credential provider."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from lanyard_harness import Daemon, User, run_as

import lanyard


class Clock:
    """An injected wall clock (unix seconds) the test moves forward by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def sync_leases(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with lanyard.Client(path) as c:
        with c.lease("github", scope=["github:read_repo"], ttl=60) as lease:
            secret = lease.secret
            out["inside"] = c.introspect(secret)
        out["after_exit"] = c.introspect(secret)

        with pytest.raises(RuntimeError, match="tool failed"):
            with c.lease("github", scope=["github:read_repo"], ttl=60) as lease:
                secret = lease.secret
                raise RuntimeError("tool failed")
        out["after_exception"] = c.introspect(secret)

        clock = Clock()
        with c.lease("github", scope=["github:read_repo"], ttl=2, clock=clock) as lease:
            first = lease.get()
            out["same_while_fresh"] = lease.get().lease_id == first.lease_id
            clock.now = first.expires_at - 0.3  # inside the last fifth of its 2 s
            second = lease.get()
            out["renewed"] = (first, second)
            out["first_after_renewal"] = c.introspect(first.secret)
            out["second_inside"] = c.introspect(second.secret)
        out["second_after_exit"] = c.introspect(second.secret)
        out["leases_left"] = c.list_leases()
    return out


def async_leases(path: str) -> dict[str, Any]:
    async def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with lanyard.AsyncClient(path) as c:
            async with c.lease("github", scope=["github:read_repo"], ttl=60) as lease:
                secret = await lease.secret()
                out["inside"] = await c.introspect(secret)
            out["after_exit"] = await c.introspect(secret)

            with pytest.raises(RuntimeError, match="tool failed"):
                async with c.lease("github", scope=["github:read_repo"], ttl=60) as lease:
                    secret = await lease.secret()
                    raise RuntimeError("tool failed")
            out["after_exception"] = await c.introspect(secret)

            clock = Clock()
            async with c.lease("github", scope=["github:read_repo"], ttl=2, clock=clock) as lease:
                first = await lease.get()
                out["same_while_fresh"] = (await lease.get()).lease_id == first.lease_id
                clock.now = first.expires_at - 0.3
                second = await lease.get()
                out["renewed"] = (first, second)
                out["first_after_renewal"] = await c.introspect(first.secret)
                out["second_inside"] = await c.introspect(second.secret)
            out["second_after_exit"] = await c.introspect(second.secret)
            out["leases_left"] = await c.list_leases()
        return out
    return asyncio.run(body())


@pytest.mark.parametrize("body", [sync_leases, async_leases], ids=["Client", "AsyncClient"])
def test_lease_is_revoked_on_exit_and_on_exception_and_renewed_near_expiry(daemon: Daemon, agent_user: User,
                                                                           body: Any) -> None:
    out = run_as(agent_user, body, daemon.agent_socket)
    assert out["inside"].active and out["inside"].service == "github"
    assert not out["after_exit"].active
    assert not out["after_exception"].active
    first, second = out["renewed"]
    assert out["same_while_fresh"]
    assert second.lease_id != first.lease_id and second.secret != first.secret
    assert second.expires_at - second.issued_at == 2
    assert not out["first_after_renewal"].active  # the old lease is revoked when it is replaced
    assert out["second_inside"].active and out["second_inside"].lease_id == second.lease_id
    assert not out["second_after_exit"].active
    assert out["leases_left"] == []


def test_credential_provider(daemon: Daemon, agent_user: User) -> None:
    def body() -> dict[str, Any]:
        clock = Clock()
        with lanyard.Client(daemon.agent_socket) as c:
            provider = lanyard.LanyardCredentialProvider(c, scopes={"github": ["github:read_repo"]}, ttl=30, clock=clock)
            out: dict[str, Any] = {"protocol": isinstance(provider, lanyard.CredentialProvider)}
            with provider:
                one = provider.get("github")
                out["cached"] = provider.get("github") == one
                clock.now += 29
                two = provider.get("github")
                out["renewed"] = two != one
                out["one"], out["two"] = c.introspect(one), c.introspect(two)
                lease = provider.provision("github", scope=["github:read_repo"], ttl=10)
                out["revoked"] = provider.revoke(lease.lease_id)
                out["two_before_close"] = c.introspect(two)
            out["after_close"] = c.introspect(two)
            out["rotation"] = provider.rotate("github")
        return out

    out = run_as(agent_user, body)
    assert out["protocol"] and out["cached"] and out["renewed"]
    assert not out["one"].active and out["two"].active and out["two"].scope == ("github:read_repo",)
    assert out["revoked"] is True and out["rotation"].version >= 1
    assert out["two_before_close"].active and not out["after_close"].active
