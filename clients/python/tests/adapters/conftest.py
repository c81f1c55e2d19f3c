"""The adapter tests' daemon: the agent may read (LOW) and push (MEDIUM), and may not delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lanyard_harness import Daemon, User, policy_for


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon], agent_user: User, approver_user: User) -> Daemon:
    """A lanyardd where the agent may read (LOW) and push (MEDIUM), and may not delete."""
    return daemon_factory(policy_for(
        {"adapter": (agent_user, ["repo:read", "repo:push"])},
        capabilities={"repo:read": "low", "repo:push": "medium", "repo:delete": "low"},
        services={"repo": "{ kind: opaque }"},
        approvers=[approver_user],
    ))
