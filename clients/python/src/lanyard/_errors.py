"""Errors: one exception per status code family, built from a daemon response in one place."""

from __future__ import annotations

from typing import Any

from lanyard.v1 import common_pb2

_CODE_NAMES = {v: k.removeprefix("CODE_") for k, v in common_pb2.Code.items()}


def code_name(code: int) -> str:
    """The gRPC-style name of a status code, e.g. PERMISSION_DENIED."""
    return _CODE_NAMES.get(code, f"CODE_{code}")


class LanyardError(Exception):
    """An error status from lanyardd, or a transport failure (UNAVAILABLE).

    `response` is the daemon's `lanyard.v1.Response` when there was one: a non-OK
    response may carry the result fields that explain it — for a refused Provision the
    decision's `reason_code` (`not_granted`, `rate_limited`, `budget_exceeded`, ...) and,
    when rate limited, `retry_after_seconds`.
    """

    code: int = common_pb2.CODE_UNKNOWN

    def __init__(self, code: int, message: str, response: Any = None) -> None:
        super().__init__(code, message, response)
        self.code = code
        self.message = message
        self.response = response

    @property
    def code_name(self) -> str:
        return code_name(self.code)

    @property
    def reason_code(self) -> str:
        """The decision's stable reason code, when the response carries one ("" otherwise)."""
        return str(getattr(self._result, "reason_code", ""))

    @property
    def retry_after_seconds(self) -> int:
        """Seconds until a rate-limited call can be allowed again (0: not rate limited)."""
        return int(getattr(self._result, "retry_after_seconds", 0))

    @property
    def _result(self) -> Any:
        kind = self.response.WhichOneof("result") if self.response is not None else None
        return getattr(self.response, kind) if kind else None

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.response))


class Unauthenticated(LanyardError):
    """The daemon does not know the calling process as any agent."""


class PermissionDenied(LanyardError):
    """A known caller asked for something the policy does not allow."""


class InvalidArgument(LanyardError):
    """The request itself is malformed (a bad capability, a TTL over the maximum, ...)."""


class NotFound(LanyardError):
    """No such lease or approval (of this agent)."""


class ResourceExhausted(LanyardError):
    """A limit was reached: leases, pending approvals, connections, frame size."""


class FailedPrecondition(LanyardError):
    """The call cannot proceed as things stand (e.g. a static secret not stored yet)."""


class ApprovalRequired(FailedPrecondition):
    """A human must approve first: show `binding_code`, then retry with `approval_id`."""

    approval_id: str
    binding_code: str
    expires_at: int

    def __init__(self, code: int, message: str, response: Any = None) -> None:
        super().__init__(code, message, response)
        kind = response.WhichOneof("result") if response is not None else None
        result = getattr(response, kind) if kind else None
        self.approval_id = getattr(result, "approval_id", "")
        self.binding_code = getattr(result, "binding_code", "")
        self.expires_at = getattr(result, "approval_expires_at", 0)


class Unavailable(LanyardError):
    """The daemon cannot be reached, closed the connection, or cannot serve the call now."""


class DeadlineExceeded(LanyardError):
    """No answer in time (the client's timeout, or a frame the daemon gave up on)."""


class Internal(LanyardError):
    """The daemon failed internally, or sent something this client cannot read."""


_BY_CODE: dict[int, type[LanyardError]] = {
    common_pb2.CODE_UNAUTHENTICATED: Unauthenticated,
    common_pb2.CODE_PERMISSION_DENIED: PermissionDenied,
    common_pb2.CODE_INVALID_ARGUMENT: InvalidArgument,
    common_pb2.CODE_OUT_OF_RANGE: InvalidArgument,
    common_pb2.CODE_NOT_FOUND: NotFound,
    common_pb2.CODE_RESOURCE_EXHAUSTED: ResourceExhausted,
    common_pb2.CODE_FAILED_PRECONDITION: FailedPrecondition,
    common_pb2.CODE_UNAVAILABLE: Unavailable,
    common_pb2.CODE_DEADLINE_EXCEEDED: DeadlineExceeded,
    common_pb2.CODE_INTERNAL: Internal,
    common_pb2.CODE_DATA_LOSS: Internal,
    common_pb2.CODE_UNKNOWN: Internal,
}


def error_for(response: Any) -> LanyardError:
    """The exception for a non-OK `lanyard.v1.Response`."""
    code, message = response.status.code, response.status.message
    cls = _BY_CODE.get(code, LanyardError)
    if cls is FailedPrecondition:
        kind = response.WhichOneof("result")
        if kind and getattr(getattr(response, kind), "approval_id", ""):
            cls = ApprovalRequired
    return cls(code, message, response)
