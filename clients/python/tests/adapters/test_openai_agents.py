"""The OpenAI Agents SDK adapter in a real `Runner` loop with the SDK's `ScriptedModel`
(a `Model` that emits the tool calls it is given), as the agent uid against lanyardd:
PENDING waits in the guardrail, or (`interrupt=True`) interrupts the run, which resumes
after the approver approved."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

pytest.importorskip("agents")

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
from agents import Agent, FunctionTool, RunConfig, Runner, ToolCallOutputItem, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from lanyard_harness import run_as

import lanyard
from lanyard.adapters.openai_agents import LanyardGuard, protect, requires

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # offline: no trace export


def run_agent(socket: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One agent run whose model calls ``tool`` once, then answers (PENDING waits in the
    guardrail); what ran and what the model was given as the tool's output."""
    repo = Repo()

    async def main() -> list[Any]:
        async with lanyard.AsyncClient(socket) as client:
            gate = lanyard.ApprovalGate(client, wait=60)

            @function_tool
            def read_file(path: str) -> str:
                return repo.read_file(path)

            @function_tool
            def delete(path: str) -> str:
                return repo.delete(path)

            @requires("repo:push", gate, resource=lambda arguments: arguments["branch"])
            @function_tool
            def push(branch: str, force: bool) -> str:
                return repo.push(branch, force)

            model = ScriptedModel([[function_call(tool, arguments, call_id="call-1")], [assistant_message("done")]])
            tools = [*protect([read_file, delete], gate, RULES), push]
            agent = Agent(name="coder", model=model, tools=tools)
            result = await Runner.run(agent, "work on the repository", run_config=RunConfig(tracing_disabled=True))
            assert result.final_output == "done"
            return [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]

    outputs = asyncio.run(main())
    return {"ran": repo.ran, "outputs": outputs}


def run_interrupted(socket: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The same run with ``LanyardGuard.protect(interrupt=True)``: a held call interrupts
    the run; ``resolve`` waits for the approver; the run resumes from its state."""
    repo = Repo()
    interruptions: list[str] = []

    async def main() -> list[Any]:
        async with lanyard.AsyncClient(socket) as client:
            guard = LanyardGuard(lanyard.ApprovalGate(client, wait=60), RULES)

            @function_tool
            def read_file(path: str) -> str:
                return repo.read_file(path)

            @function_tool
            def delete(path: str) -> str:
                return repo.delete(path)

            @function_tool
            def push(branch: str, force: bool) -> str:
                return repo.push(branch, force)

            model = ScriptedModel([[function_call(tool, arguments, call_id="call-1")], [assistant_message("done")]])
            agent = Agent(name="coder", model=model, tools=guard.protect([read_file, delete, push], interrupt=True))
            config = RunConfig(tracing_disabled=True)
            result = await Runner.run(agent, "work on the repository", run_config=config)
            while result.interruptions:
                interruptions.extend(item.tool_name or "" for item in result.interruptions)
                assert repo.ran == []  # interrupted before the tool body
                result = await Runner.run(agent, await guard.resolve(result), run_config=config)
            assert result.final_output == "done"
            return [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]

    outputs = asyncio.run(main())
    return {"ran": repo.ran, "outputs": outputs, "interruptions": interruptions}


@pytest.mark.parametrize("run", [run_agent, run_interrupted])
def test_an_allowed_call_runs(daemon, agent_user, run) -> None:
    seen = run_as(agent_user, run, daemon.agent_socket, *ALLOWED)
    assert seen["ran"] == [ALLOWED]
    assert seen["outputs"] == ["contents of README.md"]


@pytest.mark.parametrize("run", [run_agent, run_interrupted])
def test_a_denied_call_never_runs_and_the_model_sees_the_reason(daemon, agent_user, run) -> None:
    seen = run_as(agent_user, run, daemon.agent_socket, *DENIED)
    assert seen["ran"] == []
    reason = daemon_reason(daemon, agent_user, "repo:delete")
    assert seen["outputs"] == [f"Lanyard denied repo:delete for tool delete: {reason}"]


@pytest.mark.parametrize("run", [run_agent, run_interrupted])
def test_a_held_call_runs_once_after_the_approver_approves(daemon, agent_user, approver_user, run) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run, daemon.agent_socket, *HELD)
    assert_held_approval(approval)
    assert seen["ran"] == [HELD]
    assert seen["outputs"] == ["pushed main"]
    assert seen.get("interruptions", ["push"]) == ["push"]
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"
    assert len(approvals(daemon)) == 1  # the resumed run used the interruption's approval


def test_protect_refuses_a_tool_without_a_rule() -> None:
    @function_tool
    def unlisted(path: str) -> str:
        return path

    gate = lanyard.ApprovalGate(lanyard.AsyncClient("/nonexistent.sock"))
    with pytest.raises(ValueError, match="unlisted"):
        protect([unlisted], gate, RULES)
    assert isinstance(unlisted, FunctionTool)


@pytest.mark.parametrize("run", [run_agent, run_interrupted])
def test_an_unreachable_daemon_refuses_the_call(run) -> None:
    seen = run(UNREACHABLE, *ALLOWED)
    assert seen["ran"] == []
    [told] = seen["outputs"]
    assert told.startswith("Lanyard denied repo:read for tool read_file: lanyardd could not decide: ")
