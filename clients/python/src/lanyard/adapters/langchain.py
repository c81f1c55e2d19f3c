"""LangChain and LangGraph: a tool wrapper, and an ``interrupt()``-based approval.

:func:`guard` wraps a LangChain tool: before the inner tool runs, lanyardd is asked
(a gate over a blocking ``Client``). ALLOW runs the tool; DENY raises a
``ToolException`` that LangChain turns into the tool's message, so the model sees the
daemon's reason (the tool body never runs); PENDING waits in the wrapper for the
approver (the gate's wait), then the approved call runs once.

:func:`interceptor` is a LangGraph ``ToolNode(wrap_tool_call=...)`` hook that uses the
graph's own waiting path instead: ALLOW executes; DENY answers with a ``ToolMessage``
carrying the reason; PENDING calls ``langgraph.types.interrupt()`` with the approval id
and binding code (see :func:`approval_request`), so the graph pauses at its checkpoint.
Once an approver ran ``lanyardctl approvals approve ID``, resume the graph with
``Command(resume=...)`` (any value): the interceptor authorizes again with the approval
id, and the call runs once — or the model is told it was denied or is still pending.
LangGraph runs the tool node again on resume; the interceptor remembers the pending
approval by tool call id so that no second approval is opened.

``pip install 'lanyard[langchain]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import BaseTool, StructuredTool, ToolException
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command, interrupt
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "lanyard.adapters.langchain needs langchain-core and langgraph: pip install 'lanyard[langchain]'"
    ) from error

from lanyard import ApprovalGate, ApprovalPending, Client, LanyardError, UnauthorizedToolCall
from lanyard.adapters._tools import Hold, Rules, ToolCall, ToolRule, BadToolCall, require_client

__all__ = ["approval_request", "guard", "interceptor"]

ToolResult = ToolMessage | Command[Any]


def guard(tool: BaseTool, gate: ApprovalGate, rule: str | ToolRule, *, wait: float | None = None) -> BaseTool:
    """``tool`` behind lanyardd: same name, description and arguments; ``rule`` is its
    capability or a :class:`~lanyard.adapters.ToolRule`. ``gate`` is over a blocking
    ``Client`` (``ainvoke`` runs the wrapper in an executor)."""
    require_client(gate, Client, "lanyard.adapters.langchain.guard")
    rules = {tool.name: rule}

    def run(**arguments: Any) -> Any:
        try:
            call = ToolCall.of(rules, tool.name, arguments)
        except BadToolCall as error:
            raise ToolException(str(error)) from None
        try:
            call.check(gate, wait=wait)
        except UnauthorizedToolCall as denied:
            raise ToolException(call.denied(denied.reason)) from None
        except ApprovalPending as pending:
            raise ToolException(call.waiting(Hold.raised(pending))) from None
        except LanyardError as error:
            raise ToolException(call.denied(f"lanyardd could not decide: {error}")) from None
        return tool.invoke(arguments)

    return StructuredTool.from_function(
        func=run,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        handle_tool_error=True,
    )


def approval_request(call: ToolCall, hold: Hold, tool_call_id: str) -> dict[str, Any]:
    """The value the interceptor passes to ``interrupt()``: what a person needs to find
    and approve the held call (``lanyardctl approvals approve <approval_id>``)."""
    return {
        "kind": "lanyard_approval",
        "tool": call.tool,
        "tool_call_id": tool_call_id,
        "capability": call.capability,
        "resource": call.resource,
        "args": dict(call.args),
        "approval_id": hold.approval_id,
        "binding_code": hold.binding_code,
        "expires_at": hold.expires_at,
        "message": call.waiting(hold),
    }


def interceptor(
    gate: ApprovalGate, rules: Rules, *, wait: float = 0.0
) -> Callable[[ToolCallRequest, Callable[[ToolCallRequest], ToolResult]], ToolResult]:
    """A ``wrap_tool_call`` for LangGraph's ``ToolNode`` (gate over a blocking
    ``Client``). On resume it waits up to ``wait`` seconds (default: not at all) for an
    approval that is still pending. Tools missing from ``rules`` are refused."""
    require_client(gate, Client, "lanyard.adapters.langchain.interceptor")
    held: dict[str, Hold] = {}

    def wrap(request: ToolCallRequest, execute: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        tool_call = request.tool_call
        call_id = tool_call["id"] or ""

        def refuse(text: str) -> ToolMessage:
            return ToolMessage(content=text, name=tool_call["name"], tool_call_id=call_id, status="error")

        try:
            call = ToolCall.of(rules, tool_call["name"], tool_call["args"])
        except BadToolCall as error:
            return refuse(str(error))
        try:
            hold = held.get(call_id)
            if hold is None:
                decision = call.decide(gate)
                if decision.denied:
                    return refuse(call.denied(decision.reason))
                if decision.pending:
                    hold = held[call_id] = Hold.of(decision)
            if hold is not None:
                interrupt(approval_request(call, hold, call_id))  # pauses the graph until resumed
                del held[call_id]
                call.settle(gate, hold, wait=wait)
        except UnauthorizedToolCall as denied:
            return refuse(call.denied(denied.reason))
        except ApprovalPending as still:
            return refuse(call.waiting(Hold.raised(still)))
        except LanyardError as error:
            return refuse(call.denied(f"lanyardd could not decide: {error}"))
        return execute(request)

    return wrap
