"""The OpenAI Agents SDK adapter in a real `Runner` loop with the SDK's `ScriptedModel`
(a `Model` that emits the tool calls it is given), as the agent uid against lanyardd."""

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
    Repo,
    approval_state,
    assert_held_approval,
    daemon,
    daemon_reason,
    run_with_approval,
)
from agents import Agent, FunctionTool, RunConfig, Runner, ToolCallOutputItem, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from lanyard_harness import run_as

import lanyard
from lanyard.adapters.openai_agents import protect, requires

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # offline: no trace export


def run_agent(socket: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One agent run whose model calls ``tool`` once, then answers; what ran and what the
    model was given as the tool's output."""
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


def test_an_allowed_call_runs(daemon, agent_user) -> None:
    seen = run_as(agent_user, run_agent, daemon.agent_socket, *ALLOWED)
    assert seen == {"ran": [ALLOWED], "outputs": ["contents of README.md"]}


def test_a_denied_call_never_runs_and_the_model_sees_the_reason(daemon, agent_user) -> None:
    seen = run_as(agent_user, run_agent, daemon.agent_socket, *DENIED)
    assert seen["ran"] == []
    reason = daemon_reason(daemon, agent_user, "repo:delete")
    assert seen["outputs"] == [f"Lanyard denied repo:delete for tool delete: {reason}"]


def test_a_held_call_runs_once_after_the_approver_approves(daemon, agent_user, approver_user) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_agent, daemon.agent_socket, *HELD)
    assert_held_approval(approval)
    assert seen == {"ran": [HELD], "outputs": ["pushed main"]}
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"


def test_protect_refuses_a_tool_without_a_rule() -> None:
    @function_tool
    def unlisted(path: str) -> str:
        return path

    gate = lanyard.ApprovalGate(lanyard.AsyncClient("/nonexistent.sock"))
    with pytest.raises(ValueError, match="unlisted"):
        protect([unlisted], gate, RULES)
    assert isinstance(unlisted, FunctionTool)
