"""What every adapter asks lanyardd, from a tool name and the model's arguments (no daemon)."""

from __future__ import annotations

import pytest

import lanyard
from lanyard.adapters import ToolCall, ToolRule, canonical_args
from lanyard.adapters._tools import BadToolCall, require_client


@pytest.mark.parametrize(
    ("value", "bound"),
    [
        ("main", "main"),
        ("", ""),
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        (None, "null"),
        (["b", "a"], '["b","a"]'),
        ({"z": 1, "a": [True, None]}, '{"a":[true,null],"z":1}'),
        ("ünï", "ünï"),
    ],
)
def test_strings_stay_as_they_are_and_other_json_values_become_compact_sorted_json(value: object, bound: str) -> None:
    assert canonical_args({"x": value}) == {"x": bound}


def test_bind_keeps_only_the_named_arguments_and_binds_a_missing_one_as_null() -> None:
    assert canonical_args({"branch": "main", "note": "hi"}, bind=["branch", "force"]) == {"branch": "main", "force": "null"}


def test_a_rule_maps_a_tool_to_its_capability_resource_and_args() -> None:
    rules = {"push": ToolRule("repo:push", resource=lambda a: a["branch"], bind=["branch"]), "read": "repo:read"}
    assert ToolCall.of(rules, "push", {"branch": "main", "force": False}) == ToolCall(
        "push", "repo:push", "main", {"branch": "main"}
    )
    assert ToolCall.of(rules, "read", {"path": "a"}) == ToolCall("read", "repo:read", "", {"path": "a"})


def test_a_tool_without_a_rule_is_refused_with_what_to_do() -> None:
    with pytest.raises(BadToolCall, match="no Lanyard capability is mapped for tool 'rm': add it to the adapter's rules"):
        ToolCall.of({"read": "repo:read"}, "rm", {})


def test_an_adapter_refuses_a_gate_over_the_other_kind_of_client() -> None:
    blocking = lanyard.ApprovalGate(lanyard.Client("/nonexistent/agent.sock"))
    with pytest.raises(TypeError, match="needs an ApprovalGate over a lanyard.AsyncClient, not Client"):
        require_client(blocking, lanyard.AsyncClient, "this adapter")
    assert require_client(blocking, lanyard.Client, "this adapter") is blocking


def test_a_resource_function_that_fails_refuses_the_call() -> None:
    rules = {"push": ToolRule("repo:push", resource=lambda a: a["branch"])}
    with pytest.raises(BadToolCall, match="the resource of tool 'push' cannot be found in its arguments \\(KeyError\\)"):
        ToolCall.of(rules, "push", {"force": True})
