"""OpenAI Agents SDK: a tool input guardrail that asks lanyardd before each tool call, and
optionally the SDK's own ``needs_approval`` interruptions for the calls lanyardd holds.

The guardrail runs right before the tool body. ALLOW lets the body run; DENY rejects
the call and the model sees the daemon's reason as the tool's output (the body never
runs). Any error (daemon unreachable, unmapped tool, unparsable arguments) rejects the
call. A PENDING call goes one of two ways:

- ``protect(tools, gate, rules)`` (or ``@requires``): the guardrail waits for the
  approver (the gate's wait, ``AwaitApproval`` long polls), then the approved call runs
  once — or is rejected with the reason, or with the approval id and binding code if it
  is still pending.
- ``LanyardGuard(gate, rules).protect(tools, interrupt=True)``: ``needs_approval`` asks
  lanyardd, and a PENDING call interrupts the run (``result.interruptions``), the SDK's
  human-in-the-loop path. ``await guard.resolve(result)`` waits for the approver and
  approves or rejects each interruption on the run state; ``Runner.run(agent, state)``
  resumes, and the guardrail authorizes again with the approval id, so the daemon — not
  ``RunState.approve`` — lets exactly the approved call run, once.

    gate = ApprovalGate(AsyncClient(), wait=300)
    push = requires("github:push", gate, resource=lambda a: a["repo"])(function_tool(push))
    tools = protect([read_file, push_branch], gate, {"read_file": "fs:read", "push_branch": "github:push"})

``pip install 'lanyard[openai-agents]'``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

try:
    from agents import (
        FunctionTool,
        RunContextWrapper,
        RunResult,
        RunState,
        ToolApprovalItem,
        ToolGuardrailFunctionOutput,
        ToolInputGuardrail,
        ToolInputGuardrailData,
    )
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lanyard.adapters.openai_agents needs the OpenAI Agents SDK: pip install 'lanyard[openai-agents]'"
    ) from error

from lanyard import ApprovalGate, ApprovalPending, AsyncClient, LanyardError, UnauthorizedToolCall
from lanyard.adapters._tools import BadToolCall, Hold, Resource, Rules, ToolCall, ToolRule, require_client

__all__ = ["LanyardGuard", "guardrail", "protect", "requires"]


class LanyardGuard:
    """The guardrail and ``needs_approval`` hooks for tools named in ``rules``, over
    ``gate`` (an ``AsyncClient``); ``wait`` overrides the gate's wait for PENDING."""

    def __init__(self, gate: ApprovalGate, rules: Rules, *, wait: float | None = None) -> None:
        self._gate = require_client(gate, AsyncClient, "the OpenAI Agents SDK adapter")
        self._rules = rules
        self._wait = wait
        self._held: dict[str, tuple[ToolCall, Hold]] = {}  # by call id, from needs_approval to the guardrail
        self.guardrail: ToolInputGuardrail[Any] = ToolInputGuardrail(guardrail_function=self._check, name="lanyard")

    def protect(self, tools: Sequence[FunctionTool], *, interrupt: bool = False) -> list[FunctionTool]:
        """Copies of ``tools`` with the guardrail first among their input guardrails (and,
        with ``interrupt``, ``needs_approval`` asking lanyardd). Every tool must be a
        ``FunctionTool`` named in the rules: one left out would run unchecked, so it is
        refused here rather than at run time."""
        protected = []
        for tool in tools:
            if not isinstance(tool, FunctionTool):
                raise TypeError(f"{tool!r} is not a FunctionTool: Lanyard guards function tools only")
            if tool.name not in self._rules:
                raise ValueError(f"tool {tool.name!r} has no rule: map it to a capability in rules")
            changes: dict[str, Any] = {"tool_input_guardrails": [self.guardrail, *(tool.tool_input_guardrails or [])]}
            if interrupt:
                changes["needs_approval"] = self._needs_approval(tool.name)
            protected.append(replace(tool, **changes))
        return protected

    async def resolve(self, result: RunResult, *, wait: float | None = None) -> RunState[Any]:
        """The run state to resume ``result`` with: each interruption of a guarded tool is
        approved once lanyardd's approver approved it (waiting up to ``wait`` seconds,
        default the guard's), else rejected with the reason the model then sees.
        Other interruptions are left for the application to decide (a guarded tool's
        guardrail still asks lanyardd when it runs)."""
        state = result.to_state()
        for item in result.interruptions:
            call_id = _call_id(item)
            held = self._held.get(call_id)
            if held is None:
                continue
            call, hold = held
            try:
                await call.aapproved(self._gate, hold, wait=self._wait if wait is None else wait)
            except UnauthorizedToolCall as denied:
                refusal = call.denied(denied.reason)
            except ApprovalPending:
                refusal = call.waiting(hold)
            except LanyardError as error:
                refusal = call.denied(f"lanyardd could not decide: {error}")
            else:
                state.approve(item)  # the guardrail consumes the approval when the call runs
                continue
            del self._held[call_id]
            state.reject(item, rejection_message=refusal)
        return state

    def _needs_approval(self, tool: str) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Any]:
        async def needs_approval(context: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str) -> bool:
            try:
                call = ToolCall.of(self._rules, tool, arguments)
                decision = await call.adecide(self._gate)
            except (BadToolCall, LanyardError):
                return False  # the guardrail refuses it
            if decision.pending:
                self._held[call_id] = (call, Hold.of(decision))
            return decision.pending

        return needs_approval

    async def _check(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        context = data.context
        try:
            call = ToolCall.of(self._rules, context.tool_name, json.loads(context.tool_arguments or "{}"))
        except (ValueError, BadToolCall) as error:
            return ToolGuardrailFunctionOutput.reject_content(f"Lanyard denied tool {context.tool_name}: {error}")
        held = self._held.pop(context.tool_call_id, None)
        try:
            if held is not None and held[0] == call:  # interrupted, resolved, resumed: consume the approval
                decision = await call.asettle(self._gate, held[1], wait=0)
            else:
                decision = await call.acheck(self._gate, wait=self._wait)
        except UnauthorizedToolCall as denied:
            return ToolGuardrailFunctionOutput.reject_content(call.denied(denied.reason))
        except ApprovalPending as pending:
            return ToolGuardrailFunctionOutput.reject_content(call.waiting(Hold.raised(pending)))
        except LanyardError as error:
            return ToolGuardrailFunctionOutput.reject_content(call.denied(f"lanyardd could not decide: {error}"))
        return ToolGuardrailFunctionOutput.allow(output_info=decision)


def _call_id(item: ToolApprovalItem) -> str:
    raw = item.raw_item
    return str(raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", ""))


def guardrail(gate: ApprovalGate, rules: Rules, *, wait: float | None = None) -> ToolInputGuardrail[Any]:
    """The Lanyard tool input guardrail for the tools named in ``rules`` (PENDING waits
    in the guardrail)."""
    return LanyardGuard(gate, rules, wait=wait).guardrail


def protect(
    tools: Sequence[FunctionTool], gate: ApprovalGate, rules: Rules, *, wait: float | None = None
) -> list[FunctionTool]:
    """``LanyardGuard(gate, rules, wait=wait).protect(tools)``: PENDING waits in the guardrail."""
    return LanyardGuard(gate, rules, wait=wait).protect(tools)


def requires(
    capability: str,
    gate: ApprovalGate,
    *,
    resource: Resource = "",
    bind: Sequence[str] | None = None,
    wait: float | None = None,
) -> Callable[[FunctionTool], FunctionTool]:
    """A decorator (above ``@function_tool``) that guards one tool with ``capability``;
    ``resource`` and ``bind`` as in :class:`~lanyard.adapters.ToolRule`."""

    def decorate(tool: FunctionTool) -> FunctionTool:
        return protect([tool], gate, {tool.name: ToolRule(capability, resource, bind)}, wait=wait)[0]

    return decorate
