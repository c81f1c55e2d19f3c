"""Approval gates and the capability-check decorator. Every decision is the daemon's:
the client only asks, waits for the human, and asks again with the approval."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, Union

from lanyard._flow import Flow, arun, run
from lanyard._types import ApprovalState, ApprovalStatus, Authorization

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Seconds per AwaitApproval long poll; the daemon caps one at 60.
_POLL = 55.0

Args = Mapping[str, str]
Resource = Union[str, Callable[..., str]]
ArgsSpec = Union[Args, None, Callable[..., Args]]


class UnauthorizedToolCall(Exception):
    """The daemon denied the call (or the human did): `reason` says why."""

    def __init__(self, capability: str, reason: str, authorization: Authorization | None = None) -> None:
        super().__init__(f"{capability} is not allowed: {reason}")
        self.capability = capability
        self.reason = reason
        self.authorization = authorization

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.capability, self.reason, self.authorization))


class ApprovalPending(Exception):
    """A human has not decided yet: show `binding_code`; the approval expires at `expires_at`."""

    def __init__(self, capability: str, approval_id: str, binding_code: str, expires_at: int) -> None:
        super().__init__(f"{capability} waits for a human approval (approval {approval_id}, "
                         f"code {binding_code}); approve it with `lanyardctl approvals approve {approval_id}`")
        self.capability = capability
        self.approval_id = approval_id
        self.binding_code = binding_code
        self.expires_at = expires_at

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.capability, self.approval_id, self.binding_code, self.expires_at))


def _ask(capability: str, resource: str, args: Args | None, approval_id: str = "") -> Flow[Authorization]:
    auth: Authorization = yield ("authorize", dict(capability=capability, resource=resource, args=args,
                                                   approval_id=approval_id))
    return auth


def _check(capability: str, resource: str, args: Args | None, wait: float) -> Flow[Authorization]:
    auth = yield from _ask(capability, resource, args)
    if auth.allowed:
        return auth
    if not auth.pending:
        raise UnauthorizedToolCall(capability, auth.reason, auth)
    deadline = time.monotonic() + wait
    status = ApprovalStatus(ApprovalState.PENDING, "", auth.binding_code, auth.approval_expires_at)
    while status.state is ApprovalState.PENDING and (left := deadline - time.monotonic()) > 0:
        status = yield ("await_approval", dict(approval_id=auth.approval_id, wait=min(left, _POLL)))
    if status.state is ApprovalState.PENDING:
        raise ApprovalPending(capability, auth.approval_id, auth.binding_code, auth.approval_expires_at)
    if status.state is not ApprovalState.APPROVED:
        raise UnauthorizedToolCall(capability, status.reason or f"the approval is {status.state.name}", auth)
    # Consumed by exactly this call: the daemon checks it binds the same capability, resource and args.
    final = yield from _ask(capability, resource, args, auth.approval_id)
    if not final.allowed:
        raise UnauthorizedToolCall(capability, final.reason, final)
    return final


class ApprovalGate:
    """An explicit gate: `gate.check(capability, ...)` returns the daemon's ALLOW or raises.

    PENDING waits up to `wait` seconds for a human (AwaitApproval long polls), then
    re-authorizes with the approval id; DENY raises UnauthorizedToolCall; still pending
    raises ApprovalPending. `decide` asks once and neither waits nor raises.
    """

    def __init__(self, client: Any, *, wait: float = 300.0) -> None:
        self.client = client
        self.wait = wait

    def check(self, capability: str, *, resource: str = "", args: Args | None = None,
              wait: float | None = None) -> Authorization:
        return run(_check(capability, resource, args, self.wait if wait is None else wait), self.client)

    async def acheck(self, capability: str, *, resource: str = "", args: Args | None = None,
                     wait: float | None = None) -> Authorization:
        return await arun(_check(capability, resource, args, self.wait if wait is None else wait), self.client)

    def decide(self, capability: str, *, resource: str = "", args: Args | None = None,
               approval_id: str = "") -> Authorization:
        return run(_ask(capability, resource, args, approval_id), self.client)

    async def adecide(self, capability: str, *, resource: str = "", args: Args | None = None,
                      approval_id: str = "") -> Authorization:
        return await arun(_ask(capability, resource, args, approval_id), self.client)


def _bound(spec: Any, call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> Any:
    return spec(*call_args, **call_kwargs) if callable(spec) else spec


def require_capability(capability: str, *, resource: Resource = "", args: ArgsSpec = None, client: Any = None,
                       wait: float = 300.0) -> Callable[[F], F]:
    """Runs the decorated function (sync or async) only when the daemon allows `capability`.

    `resource` and `args` may be callables of the function's arguments: what they return
    is what the daemon decides on and a human approves. Without `client`, each call
    connects to the default socket (a Client, or an AsyncClient for a coroutine function).
    """

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*a: Any, **kw: Any) -> Any:
                await _acheck_with(client, capability, _bound(resource, a, kw), _bound(args, a, kw), wait)
                return await func(*a, **kw)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            _check_with(client, capability, _bound(resource, a, kw), _bound(args, a, kw), wait)
            return func(*a, **kw)
        return wrapper  # type: ignore[return-value]

    return decorate


def execute_with_approval(operation: str, func: Callable[[], T], *, client: Any = None, resource: str = "",
                          args: Args | None = None, wait: float = 300.0) -> T:
    """Runs `func()` once the daemon allows `operation` (waiting for a human when PENDING)."""
    _check_with(client, operation, resource, args, wait)
    return func()


async def aexecute_with_approval(operation: str, func: Callable[[], Awaitable[T]], *, client: Any = None,
                                 resource: str = "", args: Args | None = None, wait: float = 300.0) -> T:
    """`execute_with_approval` for an AsyncClient and a coroutine function."""
    await _acheck_with(client, operation, resource, args, wait)
    return await func()


def _check_with(client: Any, capability: str, resource: str, args: Args | None, wait: float) -> Authorization:
    if client is not None:
        return ApprovalGate(client, wait=wait).check(capability, resource=resource, args=args)
    from lanyard._client import Client
    with Client() as own:
        return ApprovalGate(own, wait=wait).check(capability, resource=resource, args=args)


async def _acheck_with(client: Any, capability: str, resource: str, args: Args | None, wait: float) -> Authorization:
    if client is not None:
        return await ApprovalGate(client, wait=wait).acheck(capability, resource=resource, args=args)
    from lanyard._async import AsyncClient
    async with AsyncClient() as own:
        return await ApprovalGate(own, wait=wait).acheck(capability, resource=resource, args=args)
