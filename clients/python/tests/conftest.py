"""The SDK tests' policy and daemon; the harness (Tests/python/lanyard_harness.py) does the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from lanyard_harness import Daemon, User, policy_for

CAPABILITIES = {
    "github:read_repo": "low",
    "github:push": "medium",
    "github:admin": "high",
    "github:delete": "low",  # catalogued, granted to nobody
    "github:introspect": "low",
    "github:rotate": "low",
    "openai:chat": "low",
}
GRANTS = ["github:read_repo", "github:push", "github:admin", "github:introspect", "github:rotate", "openai:chat"]
SERVICES = {"github": "{ kind: opaque, max_ttl_seconds: 900 }", "openai": "{ kind: static }"}


def sdk_policy(agent: User, approvers: Sequence[User] = ()) -> str:
    """Agent `a` holds GRANTS; `approvers` approve (none: HIGH is always denied)."""
    return policy_for({"a": (agent, GRANTS)}, capabilities=CAPABILITIES, services=SERVICES, approvers=approvers)


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon], agent_user: User, approver_user: User) -> Daemon:
    """A daemon where agent `a` (agent_user) holds GRANTS and approver_user approves."""
    return daemon_factory(sdk_policy(agent_user, [approver_user]))
