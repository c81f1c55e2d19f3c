"""OpenAI Agents SDK: a tool input guardrail that asks lanyardd before each tool call.

The guardrail runs right before the tool body. ALLOW lets the body run; DENY rejects
the call and the model sees the daemon's reason as the tool's output (the body never
runs); PENDING waits in the guardrail for the approver (the gate's wait,
``AwaitApproval`` long polls), then the approved call runs once — or is rejected with
the reason, or with the approval id and binding code if it is still pending. Any
error (daemon unreachable, unmapped tool, unparsable arguments) rejects the call.

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
    from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrail, ToolInputGuardrailData
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lanyard.adapters.openai_agents needs the OpenAI Agents SDK: pip install 'lanyard[openai-agents]'"
    ) from error

from lanyard import ApprovalGate, ApprovalPending, AsyncClient, LanyardError, UnauthorizedToolCall
from lanyard.adapters._tools import Hold, Resource, Rules, ToolCall, ToolRule, BadToolCall, require_client

__all__ = ["guardrail", "protect", "requires"]


def guardrail(gate: ApprovalGate, rules: Rules, *, wait: float | None = None) -> ToolInputGuardrail[Any]:
    """A tool input guardrail that asks lanyardd, through ``gate`` (over an
    ``AsyncClient``), for each call of a tool named in ``rules``; ``wait`` overrides the
    gate's wait for PENDING."""
    require_client(gate, AsyncClient, "the OpenAI Agents SDK adapter")

    async def lanyard(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        context = data.context
        try:
            arguments = json.loads(context.tool_arguments or "{}")
            call = ToolCall.of(rules, context.tool_name, arguments)
        except (ValueError, BadToolCall) as error:
            return ToolGuardrailFunctionOutput.reject_content(f"Lanyard denied tool {context.tool_name}: {error}")
        try:
            decision = await call.acheck(gate, wait=wait)
        except UnauthorizedToolCall as denied:
            return ToolGuardrailFunctionOutput.reject_content(call.denied(denied.reason))
        except ApprovalPending as pending:
            return ToolGuardrailFunctionOutput.reject_content(call.waiting(Hold.raised(pending)))
        except LanyardError as error:
            return ToolGuardrailFunctionOutput.reject_content(call.denied(f"lanyardd could not decide: {error}"))
        return ToolGuardrailFunctionOutput.allow(output_info=decision)

    return ToolInputGuardrail(guardrail_function=lanyard, name="lanyard")


def protect(
    tools: Sequence[FunctionTool], gate: ApprovalGate, rules: Rules, *, wait: float | None = None
) -> list[FunctionTool]:
    """Copies of ``tools`` with the Lanyard guardrail first among their input
    guardrails. Every tool must be a ``FunctionTool`` named in ``rules``: a tool left out
    would run unchecked, so it is refused here rather than at run time."""
    check = guardrail(gate, rules, wait=wait)
    protected = []
    for tool in tools:
        if not isinstance(tool, FunctionTool):
            raise TypeError(f"{tool!r} is not a FunctionTool: Lanyard guards function tools only")
        if tool.name not in rules:
            raise ValueError(f"tool {tool.name!r} has no rule: map it to a capability in rules")
        protected.append(replace(tool, tool_input_guardrails=[check, *(tool.tool_input_guardrails or [])]))
    return protected


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
