"""The PydanticAI adapter in a real `Agent` run with PydanticAI's `FunctionModel` emitting
a tool call, as the agent uid against lanyardd: PENDING ends the run with
`DeferredToolRequests`; `resolve` waits for the approver; the next run consumes the
approval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from adapter_support import (
    ALLOWED,
    DENIED,
    HELD,
    RULES,
    UNREACHABLE,
    Repo,
    approval_state,
    adapter_daemon,  # noqa: F401 - the `daemon` fixture
    assert_held_approval,
    daemon_reason,
    run_with_approval,
)
from lanyard_harness import run_as
from pydantic_ai import Agent, DeferredToolRequests, FunctionToolset, ToolApproved
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import lanyard
from lanyard.adapters.pydantic_ai import LanyardToolset, resolve


def run_agent(socket: str, tool: str, arguments: dict[str, Any], *, edit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Agent runs whose model calls ``tool`` once, then answers; a run that ends with
    deferred approvals is resolved (waiting for the approver) and continued — with the
    approved call's arguments replaced by ``edit`` if given."""
    repo = Repo()
    outputs: list[str] = []  # what the model was told about call-1

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answers = [
            part.model_response_str() if hasattr(part, "model_response_str") else str(part.content)
            for message in messages if isinstance(message, ModelRequest)
            for part in message.parts if getattr(part, "tool_call_id", None) == "call-1"
        ]
        if not answers:
            return ModelResponse(parts=[ToolCallPart(tool, arguments, tool_call_id="call-1")])
        outputs[:] = answers
        return ModelResponse(parts=[TextPart("done")])

    async def main() -> dict[str, Any]:
        async with lanyard.AsyncClient(socket) as client:
            gate = lanyard.ApprovalGate(client, wait=60)
            toolset = LanyardToolset(FunctionToolset([repo.read_file, repo.delete, repo.push]), gate=gate, rules=RULES)
            agent = Agent(FunctionModel(model), toolsets=[toolset], output_type=[str, DeferredToolRequests])
            result = await agent.run("work on the repository")
            deferred = []
            while isinstance(result.output, DeferredToolRequests):
                deferred.append(result.output.metadata)
                assert repo.ran == []  # deferred before the tool body
                results = await resolve(gate, result.output)
                if edit is not None:
                    results.approvals = {call_id: ToolApproved(override_args=edit) for call_id in results.approvals}
                result = await agent.run(message_history=result.all_messages(), deferred_tool_results=results)
            assert result.output == "done"
            return {"ran": repo.ran, "outputs": outputs, "deferred": deferred}

    return asyncio.run(main())


def test_an_allowed_call_runs(daemon, agent_user) -> None:
    seen = run_as(agent_user, run_agent, daemon.agent_socket, *ALLOWED)
    assert seen == {"ran": [ALLOWED], "outputs": ["contents of README.md"], "deferred": []}


def test_a_denied_call_never_runs_and_the_model_sees_the_reason(daemon, agent_user) -> None:
    seen = run_as(agent_user, run_agent, daemon.agent_socket, *DENIED)
    assert seen["ran"] == []
    reason = daemon_reason(daemon, agent_user, "repo:delete")
    [told] = seen["outputs"]
    assert f"Lanyard denied repo:delete for tool delete: {reason}" in told


def test_a_held_call_is_deferred_then_runs_once_after_the_approver_approves(daemon, agent_user, approver_user) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_agent, daemon.agent_socket, *HELD)
    assert_held_approval(approval)
    assert seen["ran"] == [HELD]
    assert seen["outputs"] == ["pushed main"]
    [metadata] = seen["deferred"]
    assert metadata["call-1"]["lanyard"]["approval_id"] == approval["approval_id"]
    assert metadata["call-1"]["lanyard"]["binding_code"] == approval["binding_code"]
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"


def test_arguments_changed_after_approval_are_refused_by_the_daemon(daemon, agent_user, approver_user) -> None:
    edited = {"branch": "release", "force": True}
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_agent, daemon.agent_socket, *HELD, edit=edited)
    assert seen["ran"] == []
    [told] = seen["outputs"]
    assert "Lanyard denied repo:push for tool push: " in told
    assert approval_state(daemon, approval["approval_id"]) == "APPROVED"  # not consumed by the edited call


def test_an_unreachable_daemon_refuses_the_call() -> None:
    seen = run_agent(UNREACHABLE, *ALLOWED)
    assert seen["ran"] == []
    [told] = seen["outputs"]
    assert "Lanyard denied repo:read for tool read_file: lanyardd could not decide: " in told
