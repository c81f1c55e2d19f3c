"""AgentIdentity: tokens issued and validated by the daemon, and verified offline against
its JWKS with joserfc (the `lanyard[jose]` extra)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lanyard_harness import Daemon, User, run_as

import lanyard
from lanyard import AgentIdentity, InvalidToken

ISSUER = "spiffe://py.internal"


def test_issue_validate_and_verify_offline(daemon: Daemon, agent_user: User) -> None:
    def body() -> dict[str, Any]:
        with lanyard.Client(daemon.agent_socket) as c:
            identity = AgentIdentity(c)
            token = identity.issue("billing-agent", capabilities=["github:read_repo"], ttl=120)
            return {"token": token, "valid": identity.validate(token.token, "billing-agent"),
                    "other": identity.validate(token.token, "someone-else")}

    out = run_as(agent_user, body)
    token = out["token"]
    assert out["valid"].valid and out["valid"].claims.capabilities == ("github:read_repo",)
    assert not out["other"].valid and out["other"].failed_check == "aud"

    jwks = daemon.ctl_ok(["jwks"])
    claims = AgentIdentity.verify_offline(token.token, jwks, audience="billing-agent", issuer=ISSUER)
    assert claims == out["valid"].claims
    with pytest.raises(InvalidToken) as wrong_audience:
        AgentIdentity.verify_offline(token.token, jwks, audience="someone-else", issuer=ISSUER)
    assert wrong_audience.value.check == "aud"
    header, payload, signature = token.token.split(".")
    forged = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    with pytest.raises(InvalidToken) as bad:
        AgentIdentity.verify_offline(forged, jwks, audience="billing-agent", issuer=ISSUER)
    assert bad.value.check == "signature"


def test_agent_identity_with_an_async_client(daemon: Daemon, agent_user: User) -> None:
    async def body() -> Any:
        async with lanyard.AsyncClient(daemon.agent_socket) as c:
            identity = AgentIdentity(c)
            token = await identity.issue("billing-agent", ttl=60)
            return await identity.validate(token.token, "billing-agent")

    validation = run_as(agent_user, lambda: asyncio.run(body()))
    assert validation.valid and validation.claims.sub == f"{ISSUER}/agent/a"
