"""What every adapter shares: which capability a tool call asks for, and with which args.

A framework hands an adapter a tool name and the arguments the model chose. The adapter
looks the tool up in its rules (a mapping of tool name to a capability or a
:class:`ToolRule`), turns the arguments into the string map that Authorize binds into
the approval digest (:func:`canonical_args`), and asks lanyardd. The daemon decides;
nothing here does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lanyard import ApprovalGate, ApprovalPending, ApprovalState, ApprovalStatus, Authorization, UnauthorizedToolCall
from lanyard._flow import Flow, arun, run
from lanyard._patterns import _POLL

Resource = str | Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class ToolRule:
    """How calls of one tool are asked of lanyardd.

    ``capability`` is asked for every call. ``resource`` is a fixed string or a function of
    the call's arguments (e.g. ``lambda a: a["repo"]``). ``bind`` names the arguments
    bound into the decision; ``None`` binds all of them, so a human approves exactly the
    call that runs.
    """

    capability: str
    resource: Resource = ""
    bind: Sequence[str] | None = None


Rules = Mapping[str, str | ToolRule]
"""Tool name → capability (a string) or a :class:`ToolRule`."""


class BadToolCall(Exception):
    """A tool call the rules cannot turn into a request (no rule names the tool, or the
    rule's resource function failed on its arguments): every adapter refuses it."""


def canonical_args(arguments: Mapping[str, Any], bind: Sequence[str] | None = None) -> dict[str, str]:
    """The string map Authorize binds: strings as they are, every other JSON value as
    compact JSON with sorted keys (``{"a":1,"b":[true,null]}``, ``42``, ``true``,
    ``null``). ``bind`` keeps only the named arguments (a missing one is bound as
    ``null``, so it cannot be added after approval)."""
    names = list(arguments) if bind is None else list(bind)
    return {name: _canonical(arguments.get(name)) for name in names}


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def require_client(gate: ApprovalGate, kind: type, adapter: str) -> ApprovalGate:
    """``gate`` if its client is a ``kind`` (``Client`` or ``AsyncClient``): a blocking
    adapter cannot drive an ``AsyncClient``, nor an async one a ``Client``."""
    if not isinstance(gate.client, kind):
        raise TypeError(f"{adapter} needs an ApprovalGate over a lanyard.{kind.__name__}, not {type(gate.client).__name__}")
    return gate


@dataclass(frozen=True)
class Hold:
    """A call lanyardd holds for an approver: what a person needs to find and approve it."""

    approval_id: str
    binding_code: str = ""
    expires_at: int = 0

    @classmethod
    def of(cls, pending: Authorization) -> Hold:
        """The hold of a PENDING decision."""
        return cls(pending.approval_id, pending.binding_code, pending.approval_expires_at)

    @classmethod
    def raised(cls, pending: ApprovalPending) -> Hold:
        """The hold an ``ApprovalPending`` reports."""
        return cls(pending.approval_id, pending.binding_code, pending.expires_at)


@dataclass(frozen=True)
class ToolCall:
    """One tool call as lanyardd is asked about it."""

    tool: str
    capability: str
    resource: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Rules, tool: str, arguments: Mapping[str, Any]) -> ToolCall:
        """The call of ``tool`` with ``arguments`` under ``rules``; raises
        :class:`BadToolCall` when there is none."""
        rule = rules.get(tool)
        if rule is None:
            raise BadToolCall(f"no Lanyard capability is mapped for tool {tool!r}: add it to the adapter's rules")
        if isinstance(rule, str):
            rule = ToolRule(rule)
        try:
            resource = rule.resource(arguments) if callable(rule.resource) else rule.resource
        except Exception as error:  # noqa: BLE001 - whatever the rule's function raises refuses the call
            raise BadToolCall(f"the resource of tool {tool!r} cannot be found in its arguments ({type(error).__name__})") from None
        return cls(tool, rule.capability, str(resource), canonical_args(arguments, rule.bind))

    def decide(self, gate: ApprovalGate, *, approval_id: str = "") -> Authorization:
        """One Authorize (gate over a blocking ``Client``), no waiting; with
        ``approval_id`` it consumes that approval if the daemon finds it approved for
        exactly this call."""
        return gate.decide(self.capability, resource=self.resource, args=self.args, approval_id=approval_id)

    async def adecide(self, gate: ApprovalGate, *, approval_id: str = "") -> Authorization:
        """:meth:`decide` for a gate over an ``AsyncClient``."""
        return await gate.adecide(self.capability, resource=self.resource, args=self.args, approval_id=approval_id)

    def check(self, gate: ApprovalGate, *, wait: float | None = None) -> Authorization:
        """The gate's check: ALLOW returns; DENY raises ``UnauthorizedToolCall``; PENDING
        waits for the approver, then returns the approved call's ALLOW or raises
        ``UnauthorizedToolCall`` or ``ApprovalPending``."""
        return gate.check(self.capability, resource=self.resource, args=self.args, wait=wait)

    async def acheck(self, gate: ApprovalGate, *, wait: float | None = None) -> Authorization:
        """:meth:`check` for a gate over an ``AsyncClient``."""
        return await gate.acheck(self.capability, resource=self.resource, args=self.args, wait=wait)

    def settle(self, gate: ApprovalGate, hold: Hold, *, wait: float | None = None) -> Authorization:
        """Finish a decision held earlier (a PENDING from :meth:`decide`): wait for the
        approver up to ``wait`` seconds (default: the gate's), then authorize again with
        the approval id so that this call consumes it. Raises like :meth:`check`."""
        return run(self._settle(hold, gate.wait if wait is None else wait), gate.client)

    async def asettle(self, gate: ApprovalGate, hold: Hold, *, wait: float | None = None) -> Authorization:
        """:meth:`settle` for a gate over an ``AsyncClient``."""
        return await arun(self._settle(hold, gate.wait if wait is None else wait), gate.client)

    async def aapproved(self, gate: ApprovalGate, hold: Hold, *, wait: float | None = None) -> None:
        """Wait up to ``wait`` seconds (default: the gate's) for the approver of ``hold``;
        return once approved, raise ``ApprovalPending`` if still pending, raise
        ``UnauthorizedToolCall`` once denied, expired or used."""
        await arun(self._approved(hold, gate.wait if wait is None else wait), gate.client)

    def _approved(self, hold: Hold, wait: float) -> Flow[None]:
        deadline = time.monotonic() + wait
        status: ApprovalStatus = yield ("await_approval", {"approval_id": hold.approval_id, "wait": min(wait, _POLL)})
        while status.state is ApprovalState.PENDING and (left := deadline - time.monotonic()) > 0:
            status = yield ("await_approval", {"approval_id": hold.approval_id, "wait": min(left, _POLL)})
        if status.state is ApprovalState.PENDING:
            raise ApprovalPending(self.capability, hold.approval_id, hold.binding_code, hold.expires_at)
        if status.state is not ApprovalState.APPROVED:
            reason = status.reason or f"approval {hold.approval_id} is {status.state.name.lower()}"
            raise UnauthorizedToolCall(self.capability, reason, None)

    def _settle(self, hold: Hold, wait: float) -> Flow[Authorization]:
        yield from self._approved(hold, wait)
        final: Authorization = yield (
            "authorize",
            {"capability": self.capability, "resource": self.resource, "args": self.args, "approval_id": hold.approval_id},
        )
        if not final.allowed:
            raise UnauthorizedToolCall(self.capability, final.reason, final)
        return final

    def denied(self, reason: str) -> str:
        """What the model is told when lanyardd denies this call."""
        return f"Lanyard denied {self.capability} for tool {self.tool}: {reason}"

    def waiting(self, hold: Hold) -> str:
        """What the model and the user are told while this call waits for an approver."""
        return (
            f"Lanyard is holding {self.capability} for tool {self.tool} until an approver decides: "
            f"approval {hold.approval_id}, binding code {hold.binding_code}. "
            f"An approver runs `lanyardctl approvals approve {hold.approval_id}`; then ask again."
        )
