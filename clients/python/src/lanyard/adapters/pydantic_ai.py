"""PydanticAI: a toolset wrapper whose approvals are lanyardd's, through deferred tool calls.

:class:`LanyardToolset` wraps any toolset. Before each call lanyardd is asked (a gate
over an ``AsyncClient``): ALLOW runs the tool; DENY raises ``ToolFailed`` with the
daemon's reason, which the model sees (the tool body never runs); PENDING raises
PydanticAI's ``ApprovalRequired``, so the run ends with ``DeferredToolRequests`` whose
``metadata`` carries the approval id and binding code — PydanticAI's own
human-in-the-loop path. :func:`resolve` waits for the approver (``AwaitApproval``) and
builds the ``DeferredToolResults`` for the next run; there the toolset authorizes again
with the approval id, so lanyardd — not the ``ToolApproved`` flag — lets exactly the
approved call run, once.

    toolset = LanyardToolset(FunctionToolset([push]), gate=gate, rules={"push": "github:push"})
    agent = Agent(model, toolsets=[toolset], output_type=[str, DeferredToolRequests])
    result = await agent.run("push it")
    if isinstance(result.output, DeferredToolRequests):
        results = await resolve(gate, result.output)
        result = await agent.run(message_history=result.all_messages(), deferred_tool_results=results)

``pip install 'lanyard[pydantic-ai]'`` (``pydantic-ai-slim``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

try:
    from pydantic_ai import (
        ApprovalRequired,
        DeferredToolRequests,
        DeferredToolResults,
        RunContext,
        ToolDenied,
        ToolFailed,
        WrapperToolset,
    )
    from pydantic_ai.toolsets.abstract import ToolsetTool
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lanyard.adapters.pydantic_ai needs PydanticAI: pip install 'lanyard[pydantic-ai]'"
    ) from error

from lanyard import ApprovalGate, ApprovalPending, AsyncClient, LanyardError, UnauthorizedToolCall
from lanyard.adapters._tools import Hold, Rules, ToolCall, BadToolCall, require_client

__all__ = ["LanyardToolset", "resolve"]

_KEY = "lanyard"
"""The key of the deferred call's metadata that holds the pending decision."""


@dataclass
class LanyardToolset(WrapperToolset[Any]):
    """``wrapped`` behind lanyardd: each call of a tool named in ``rules`` is authorized
    through ``gate``; a tool missing from ``rules`` is refused."""

    gate: ApprovalGate = field(kw_only=True)
    rules: Rules = field(kw_only=True)

    def __post_init__(self) -> None:
        require_client(self.gate, AsyncClient, "LanyardToolset")

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]) -> Any:
        try:
            call = ToolCall.of(self.rules, name, tool_args)
        except BadToolCall as error:
            raise ToolFailed(str(error)) from None
        hold = _hold(ctx.tool_call_metadata) if ctx.tool_call_approved else None
        try:
            decision = await call.adecide(self.gate, approval_id=hold.approval_id if hold else "")
        except LanyardError as error:
            raise ToolFailed(call.denied(f"lanyardd could not decide: {error}")) from None
        if decision.denied:
            raise ToolFailed(call.denied(decision.reason))
        if decision.pending:
            if ctx.tool_call_approved:  # approved outside lanyardd: the daemon still holds it
                raise ToolFailed(call.waiting(Hold.of(decision)))
            raise ApprovalRequired(metadata={_KEY: _metadata(call, Hold.of(decision))})
        return await super().call_tool(name, tool_args, ctx, tool)


async def resolve(gate: ApprovalGate, requests: DeferredToolRequests, *, wait: float | None = None) -> DeferredToolResults:
    """Wait (up to ``wait`` seconds each, default the gate's) for the approver of every
    call in ``requests.approvals`` that :class:`LanyardToolset` deferred, and return the
    results to pass as ``deferred_tool_results``: approved calls go on (the toolset then
    consumes the approval), denied, expired and still-pending ones are refused with the
    reason. Calls deferred by anything else are left out, for the application to add."""
    results = DeferredToolResults()
    for part in requests.approvals:
        metadata = requests.metadata.get(part.tool_call_id, {})
        hold = _hold(metadata)
        if hold is None:
            continue
        call = ToolCall(part.tool_name, str(metadata[_KEY].get("capability", "")))
        try:
            await call.aapproved(gate, hold, wait=wait)
        except UnauthorizedToolCall as denied:
            results.approvals[part.tool_call_id] = ToolDenied(call.denied(denied.reason))
        except ApprovalPending:
            results.approvals[part.tool_call_id] = ToolDenied(call.waiting(hold))
        except LanyardError as error:
            results.approvals[part.tool_call_id] = ToolDenied(call.denied(f"lanyardd could not decide: {error}"))
        else:
            results.approvals[part.tool_call_id] = True
            results.metadata[part.tool_call_id] = metadata
    return results


def _metadata(call: ToolCall, hold: Hold) -> dict[str, Any]:
    return {
        "capability": call.capability,
        "approval_id": hold.approval_id,
        "binding_code": hold.binding_code,
        "expires_at": hold.expires_at,
        "message": call.waiting(hold),
    }


def _hold(metadata: Any) -> Hold | None:
    """The hold a deferred call's metadata carries, if :class:`LanyardToolset` put it there."""
    entry = metadata.get(_KEY) if isinstance(metadata, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("approval_id"), str):
        return None
    return Hold(entry["approval_id"], str(entry.get("binding_code", "")), int(entry.get("expires_at", 0)))
