"""Claude Agent SDK: a ``can_use_tool`` callback and a ``PreToolUse`` hook answered by lanyardd.

:class:`LanyardPermissions` gives both, over one gate (an ``AsyncClient``) and one set
of rules (tool name → capability; MCP tools are named ``mcp__<server>__<tool>``):

- ``pre_tool_use`` (a ``PreToolUse`` hook): one Authorize. ALLOW → ``permissionDecision``
  ``"allow"``; DENY → ``"deny"`` with the daemon's reason, which Claude sees (the tool
  never runs); PENDING → ``"ask"`` with the approval id and binding code as the reason,
  which sends the call to the permission callback.
- ``can_use_tool``: for a call the hook held, waits for the approver (the gate's wait,
  ``AwaitApproval`` long polls) and authorizes again with the approval id, so that
  exactly this call consumes it → ``PermissionResultAllow``; otherwise it asks lanyardd
  itself (the gate's check). Denied, expired, still pending or any error →
  ``PermissionResultDeny`` with the reason. Tool input is never rewritten.

    permissions = LanyardPermissions(ApprovalGate(AsyncClient()), {"Bash": "shell:exec"})
    options = ClaudeAgentOptions(can_use_tool=permissions.can_use_tool, hooks=permissions.hooks())

``pip install 'lanyard[claude-agent-sdk]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

try:
    from claude_agent_sdk import (
        HookContext,
        HookJSONOutput,
        HookMatcher,
        PermissionResultAllow,
        PermissionResultDeny,
        ToolPermissionContext,
    )
    from claude_agent_sdk.types import HookEvent, PermissionResult, PreToolUseHookSpecificOutput
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lanyard.adapters.claude_agent_sdk needs the Claude Agent SDK: pip install 'lanyard[claude-agent-sdk]'"
    ) from error

from lanyard import ApprovalGate, ApprovalPending, AsyncClient, LanyardError, UnauthorizedToolCall
from lanyard.adapters._tools import Hold, Rules, ToolCall, BadToolCall, require_client

__all__ = ["LanyardPermissions"]


class LanyardPermissions:
    """Claude Agent SDK permission hooks whose every answer is lanyardd's."""

    def __init__(self, gate: ApprovalGate, rules: Rules, *, wait: float | None = None) -> None:
        self._gate = require_client(gate, AsyncClient, "LanyardPermissions")
        self._rules = rules
        self._wait = wait
        self._held: dict[str, tuple[ToolCall, Hold]] = {}  # by tool_use_id, from hook to callback

    def hooks(self) -> dict[HookEvent, list[HookMatcher]]:
        """``ClaudeAgentOptions(hooks=...)``: the ``PreToolUse`` hook for every tool."""
        return {"PreToolUse": [HookMatcher(matcher=None, hooks=[self.pre_tool_use])]}

    async def pre_tool_use(self, input_data: Mapping[str, Any], tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
        """The ``PreToolUse`` hook: allow, deny or ask, as lanyardd decides."""
        if input_data.get("hook_event_name") != "PreToolUse":
            return {}
        tool = str(input_data.get("tool_name", ""))
        try:
            call = ToolCall.of(self._rules, tool, input_data.get("tool_input") or {})
        except BadToolCall as error:
            return _hook("deny", str(error))
        try:
            decision = await call.adecide(self._gate)
        except LanyardError as error:
            return _hook("deny", call.denied(f"lanyardd could not decide: {error}"))
        if decision.allowed:
            return _hook("allow", decision.reason or f"Lanyard allowed {call.capability}")
        if decision.denied:
            return _hook("deny", call.denied(decision.reason))
        hold = Hold.of(decision)
        self._held[tool_use_id or str(input_data.get("tool_use_id", ""))] = (call, hold)
        return _hook("ask", call.waiting(hold))

    async def can_use_tool(self, tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext) -> PermissionResult:
        """The ``can_use_tool`` callback: allow once lanyardd allows this exact call."""
        try:
            call = ToolCall.of(self._rules, tool_name, tool_input)
        except BadToolCall as error:
            return PermissionResultDeny(message=str(error))
        held = self._held.pop(context.tool_use_id or "", None)
        try:
            if held is not None and held[0] == call:
                await call.asettle(self._gate, held[1], wait=self._wait)
            else:
                await call.acheck(self._gate, wait=self._wait)
        except UnauthorizedToolCall as denied:
            return PermissionResultDeny(message=call.denied(denied.reason))
        except ApprovalPending as pending:
            return PermissionResultDeny(message=call.waiting(Hold.raised(pending)))
        except LanyardError as error:
            return PermissionResultDeny(message=call.denied(f"lanyardd could not decide: {error}"))
        return PermissionResultAllow()


def _hook(decision: Literal["allow", "deny", "ask"], reason: str) -> HookJSONOutput:
    output: PreToolUseHookSpecificOutput = {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    }
    return {"hookSpecificOutput": output}
