"""The LangChain adapters in a real LangGraph agent loop (model node, `ToolNode`) driven by
LangChain's `GenericFakeChatModel` emitting tool calls, as the agent uid against lanyardd:
`guard` (a tool wrapper that waits in the gate) and `interceptor` (PENDING interrupts the
graph, which resumes after the approver approved)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph")

from adapter_support import (
    ALLOWED,
    DENIED,
    HELD,
    HELD_APPROVAL,
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
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from lanyard_harness import run_as

import lanyard
from lanyard.adapters.langchain import guard, interceptor


def repo_tools(repo: Repo) -> list[BaseTool]:
    @tool
    def read_file(path: str) -> str:
        """Read a file of the repository."""
        return repo.read_file(path)

    @tool
    def delete(path: str) -> str:
        """Delete a file of the repository."""
        return repo.delete(path)

    @tool
    def push(branch: str, force: bool) -> str:
        """Push a branch."""
        return repo.push(branch, force)

    return [read_file, delete, push]


def graph(node: ToolNode, tool_name: str, arguments: dict[str, Any], **compile_options: Any) -> Any:
    """model → tools → model: the fake model calls ``tool_name`` once, then answers."""
    model = GenericFakeChatModel(messages=iter([
        AIMessage(content="", tool_calls=[{"name": tool_name, "args": arguments, "id": "call-1"}]),
        AIMessage(content="done"),
    ]))
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", node)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile(**compile_options)


def tool_outputs(state: dict[str, Any]) -> list[Any]:
    assert state["messages"][-1].content == "done"
    return [m.content for m in state["messages"] if isinstance(m, ToolMessage)]


def run_guarded(socket: str, tool_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The graph with every tool wrapped by `guard` (PENDING waits in the wrapper)."""
    repo = Repo()
    with lanyard.Client(socket) as client:
        gate = lanyard.ApprovalGate(client, wait=60)
        node = ToolNode([guard(t, gate, RULES[t.name]) for t in repo_tools(repo)])
        state = graph(node, tool_name, arguments).invoke({"messages": [HumanMessage("work on the repository")]})
    return {"ran": repo.ran, "outputs": tool_outputs(state)}


def run_interrupted(socket: str, tool_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The graph with `interceptor` on its ToolNode: a held call interrupts the graph; the
    application waits for the approver, then resumes it."""
    repo = Repo()
    interrupts: list[dict[str, Any]] = []
    with lanyard.Client(socket) as client:
        gate = lanyard.ApprovalGate(client, wait=60)
        node = ToolNode(repo_tools(repo), wrap_tool_call=interceptor(gate, RULES))
        app = graph(node, tool_name, arguments, checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "t1"}}
        state = app.invoke({"messages": [HumanMessage("work on the repository")]}, config)
        while "__interrupt__" in state:
            held = state["__interrupt__"][0].value
            interrupts.append(held)
            assert repo.ran == []  # paused before the tool body
            client.await_approval(held["approval_id"], wait=60)  # the application's own wait
            state = app.invoke(Command(resume=True), config)
    return {"ran": repo.ran, "outputs": tool_outputs(state), "interrupts": interrupts}


@pytest.mark.parametrize("run", [run_guarded, run_interrupted])
def test_an_allowed_call_runs(daemon, agent_user, run) -> None:
    seen = run_as(agent_user, run, daemon.agent_socket, *ALLOWED)
    assert seen["ran"] == [ALLOWED]
    assert seen["outputs"] == ["contents of README.md"]


@pytest.mark.parametrize("run", [run_guarded, run_interrupted])
def test_a_denied_call_never_runs_and_the_model_sees_the_reason(daemon, agent_user, run) -> None:
    seen = run_as(agent_user, run, daemon.agent_socket, *DENIED)
    assert seen["ran"] == []
    reason = daemon_reason(daemon, agent_user, "repo:delete")
    assert seen["outputs"] == [f"Lanyard denied repo:delete for tool delete: {reason}"]


@pytest.mark.parametrize("run", [run_guarded, run_interrupted])
def test_a_held_call_runs_once_after_the_approver_approves(daemon, agent_user, approver_user, run) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run, daemon.agent_socket, *HELD)
    assert_held_approval(approval)
    assert seen["ran"] == [HELD]
    assert seen["outputs"] == ["pushed main"]
    assert approval_state(daemon, approval["approval_id"]) == "CONSUMED"


def test_the_interrupt_carries_the_approval_and_resuming_opens_no_second_one(daemon, agent_user, approver_user) -> None:
    seen, approval = run_with_approval(daemon, agent_user, approver_user, run_interrupted, daemon.agent_socket, *HELD)
    [held] = seen["interrupts"]
    assert held["approval_id"] == approval["approval_id"]
    assert held["binding_code"] == approval["binding_code"]
    assert held["args"] == HELD_APPROVAL["args"]
    assert [a["approval_id"] for a in approvals(daemon)] == [approval["approval_id"]]


@pytest.mark.parametrize("run", [run_guarded, run_interrupted])
def test_an_unreachable_daemon_refuses_the_call(run) -> None:
    seen = run(UNREACHABLE, *ALLOWED)
    assert seen["ran"] == []
    [told] = seen["outputs"]
    assert told.startswith("Lanyard denied repo:read for tool read_file: lanyardd could not decide: ")
