"""The Claude Agent SDK adapter. The SDK drives its CLI, which is not installable here, so
these tests play the CLI's part: they call the `PreToolUse` hook and `can_use_tool` with
the documented input shapes (`PreToolUseHookInput`, `ToolPermissionContext`), as the
agent uid against lanyardd, run the tool only when the answers allow it, and check the
documented output shapes (`hookSpecificOutput.permissionDecision` allow/deny/ask,
`PermissionResultAllow`/`PermissionResultDeny`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("claude_agent_sdk")

from adapter_support import (
    ALLOWED,
    DENIED,
    HELD,
    RULES,
    UNREACHABLE,
    Repo,
    approval_state,
    approvals,
    adapter_daemon,  # noqa: F401 - the `daemon` fixture
    assert_held_approval,
    daemon_reason,
    run_with_approval,
)
from claude_agent_sdk import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext
from lanyard_harness import run_as

import lanyard
from lanyard.adapters.claude_agent_sdk import LanyardPermissions


def hook_input(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A `PreToolUseHookInput` as the CLI sends it."""
    return {
        "session_id": "session-1",
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": "/",
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": arguments,
        "tool_use_id": "toolu_1",
    }


def run_cli(
    socket: str, tool: str, arguments: dict[str, Any], *, hook: bool = True, asked: dict[str, Any] | None = None,
    wait: float = 60,
) -> dict[str, Any]:
    """What the CLI does with one tool use: the PreToolUse hook (when ``hook``), then, on
    "ask" or without the hook, the permission callback (given ``asked`` as the input if
    set); the tool runs only if allowed."""
    repo = Repo()

    async def main() -> dict[str, Any]:
        async with lanyard.AsyncClient(socket) as client:
            permissions = LanyardPermissions(lanyard.ApprovalGate(client, wait=wait), RULES)
            answer: dict[str, Any] = {}
            decision = "ask"
            if hook:
                answer = dict(await permissions.pre_tool_use(hook_input(tool, arguments), "toolu_1", {"signal": None}))
                decision = answer["hookSpecificOutput"]["permissionDecision"]
            permission = None
            if decision == "ask":
                reason = answer.get("hookSpecificOutput", {}).get("permissionDecisionReason")
                context = ToolPermissionContext(tool_use_id="toolu_1", decision_reason=reason)
                permission = await permissions.can_use_tool(tool, asked or arguments, context)
            if decision == "allow" or isinstance(permission, PermissionResultAllow):
                getattr(repo, tool)(**(asked or arguments))
            return {"hook": answer, "permission": permission, "ran": repo.ran}

    return asyncio.run(main())


def test_the_hook_allows_an_allowed_call(daemon, agent_user) -> None:
    seen = run_as(agent_user, run_cli, daemon.agent_socket, *ALLOWED)
    assert seen["hook"]["hookSpecificOutput"]["hookEventName"] == "PreToolUse"
    assert seen["hook"]["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert seen["permission"] is None
    assert seen["ran"] == [ALLOWED]


@pytest.mark.parametrize("hook", [True, False])
def test_a_denied_call_never_runs_and_claude_sees_the_reason(daemon, agent_user, hook) -> None:
    seen = run_as(agent_user, run_cli, daemon.agent_socket, *DENIED, hook=hook)
    told = f"Lanyard denied repo:delete for tool delete: {daemon_reason(daemon, agent_user, 'repo:delete')}"
    if hook:
        assert seen["hook"]["hookSpecificOutput"]["permissionDecision"] == "deny"
        assert seen["hook"]["hookSpecificOutput"]["permissionDecisionReason"] == told
    else:
        assert seen["permission"] == PermissionResultDeny(message=told)
    assert seen["ran"] == []


def test_the_hook_asks_for_a_held_call_and_can_use_tool_allows_it_once_approved(daemon, agent_user, approver_user) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_cli, daemon.agent_socket, *HELD)
    assert_held_approval(approval)
    output = seen["hook"]["hookSpecificOutput"]
    assert output["permissionDecision"] == "ask"
    assert approval["approval_id"] in output["permissionDecisionReason"]
    assert approval["binding_code"] in output["permissionDecisionReason"]
    assert seen["permission"] == PermissionResultAllow()  # never rewrites the input
    assert seen["ran"] == [HELD]
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"
    assert len(approvals(daemon)) == 1  # the callback used the hook's approval


def test_can_use_tool_alone_waits_for_the_approver(daemon, agent_user, approver_user) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_cli, daemon.agent_socket, *HELD, hook=False)
    assert_held_approval(approval)
    assert seen["permission"] == PermissionResultAllow()
    assert seen["ran"] == [HELD]


def test_input_changed_after_the_hook_asked_is_a_new_request_not_the_held_one(daemon, agent_user) -> None:
    changed = {"branch": "release", "force": True}
    seen = run_as(agent_user, run_cli, daemon.agent_socket, *HELD, asked=changed, wait=0)
    assert seen["hook"]["hookSpecificOutput"]["permissionDecision"] == "ask"
    assert isinstance(seen["permission"], PermissionResultDeny)
    assert seen["permission"].message.startswith("Lanyard is holding repo:push for tool push")
    assert seen["ran"] == []
    assert sorted(a["resource"] for a in approvals(daemon)) == ["main", "release"]  # each input its own approval


def test_an_unmapped_tool_or_an_unreachable_daemon_is_denied() -> None:
    async def main() -> tuple[Any, Any, Any]:
        permissions = LanyardPermissions(lanyard.ApprovalGate(lanyard.AsyncClient(UNREACHABLE)), RULES)
        unmapped = await permissions.pre_tool_use(hook_input("Bash", {"command": "rm -rf /"}), "toolu_1", {"signal": None})
        unreachable = await permissions.pre_tool_use(hook_input(*ALLOWED), "toolu_2", {"signal": None})
        callback = await permissions.can_use_tool("Bash", {"command": "ls"}, ToolPermissionContext(tool_use_id="toolu_3"))
        return unmapped, unreachable, callback

    unmapped, unreachable, callback = asyncio.run(main())
    assert unmapped["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "no Lanyard capability is mapped for tool 'Bash'" in unmapped["hookSpecificOutput"]["permissionDecisionReason"]
    assert unreachable["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "lanyardd could not decide" in unreachable["hookSpecificOutput"]["permissionDecisionReason"]
    assert isinstance(callback, PermissionResultDeny) and "'Bash'" in callback.message
