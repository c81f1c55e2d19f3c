"""Framing and the calls of the agent socket, shared by Client and AsyncClient.

A frame is a 4-byte big-endian length and one protobuf message (DESIGN.md section 4).
Each call is a `Call`: the request to send and how to read its result.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lanyard._errors import Internal, ResourceExhausted, Unavailable, error_for
from lanyard._types import (ApprovalStatus, Authorization, Hello, IdentityToken, Introspection, Lease, LeaseInfo,
                            Rotation, Validation)
from lanyard.v1 import agent_pb2, common_pb2

T = TypeVar("T")

DEFAULT_SOCKET = "/run/lanyard/agent.sock"
DEFAULT_MAX_FRAME = 65536
DEFAULT_TIMEOUT = 30.0
HEADER = 4
MAX_WAIT_MS = 2**32 - 1
LAST_WORDS_TIMEOUT = 2.0  # reading a refusal left on a connection the daemon closed


def socket_path(path: str | None) -> str:
    """The agent socket: the argument, else `$LANYARD_SOCKET`, else the default path."""
    return path or os.environ.get("LANYARD_SOCKET") or DEFAULT_SOCKET


def unix_socket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)


def cannot_connect(path: str, error: BaseException) -> Unavailable:
    detail = getattr(error, "strerror", None) or str(error) or "timed out"
    return Unavailable(common_pb2.CODE_UNAVAILABLE,
                       f"cannot connect to lanyardd at {path}: {detail}; "
                       "is the daemon running, and is the socket path (LANYARD_SOCKET) right?")


def lost(error: OSError | str) -> Unavailable:
    detail = error if isinstance(error, str) else (error.strerror or str(error))
    return Unavailable(common_pb2.CODE_UNAVAILABLE, f"the connection to lanyardd failed: {detail}; the next call reconnects")


def stale(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the daemon closed it or sent a
    refusal. Between calls nothing else can arrive, so such a connection is done."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def frame(request: Any, max_frame: int) -> bytes:
    """`request` framed, refused before sending when it is over this client's cap."""
    body: bytes = request.SerializeToString()
    if len(body) > max_frame:
        raise ResourceExhausted(common_pb2.CODE_RESOURCE_EXHAUSTED,
                                f"the request is {len(body)} bytes, over this client's max_frame of {max_frame}; "
                                "send less (shorter or fewer args) or raise max_frame to match the daemon's --max-frame")
    return len(body).to_bytes(HEADER, "big") + body


def body_length(header: bytes, max_frame: int) -> int:
    """The length a frame header announces, checked before anything is read or allocated."""
    n = int.from_bytes(header, "big")
    if n == 0 or n > max_frame:
        raise Unavailable(common_pb2.CODE_UNAVAILABLE,
                          f"lanyardd sent a frame of {n} bytes, outside this client's 1...{max_frame}; "
                          "the connection was closed (raise max_frame if the daemon's --max-frame is larger)")
    return n


def decode(body: bytes) -> Any:
    try:
        return agent_pb2.Response.FromString(body)
    except Exception:
        raise Internal(common_pb2.CODE_INTERNAL, "lanyardd sent a response that does not decode; the connection was closed") from None


def refusal(response: Any) -> bool:
    """A connection-level error (id 0): the daemon fails every call and closes."""
    return bool(response.id == 0 and response.status.code != common_pb2.CODE_OK)


@dataclass
class Call(Generic[T]):
    """One agent call: its request (the id is set when sent) and how its result reads."""

    request: Any
    parse: Callable[[Any], T]
    wait: float = 0.0  # a long poll's wait, added to the client's timeout

    def answer(self, response: Any) -> T:
        if response.status.code != common_pb2.CODE_OK:
            raise error_for(response)
        kind = self.request.WhichOneof("call")
        if response.WhichOneof("result") != kind:
            raise Internal(common_pb2.CODE_INTERNAL, f"lanyardd answered a {kind} call with {response.WhichOneof('result')}")
        return self.parse(getattr(response, kind))


def _request(**call: Any) -> Any:
    return agent_pb2.Request(**call)


def hello(client: str) -> Call[Hello]:
    return Call(_request(hello=agent_pb2.HelloRequest(client=client)), Hello.from_proto)


def authorize(capability: str, resource: str, args: Mapping[str, str] | None, approval_id: str,
              dry_run: bool = False) -> Call[Authorization]:
    m = agent_pb2.AuthorizeRequest(capability=capability, resource=resource, args=dict(args or {}), approval_id=approval_id,
                                   dry_run=dry_run)
    return Call(_request(authorize=m), Authorization.from_proto)


def provision(service: str, scope: Sequence[str], ttl: int, resource: str, args: Mapping[str, str] | None,
              approval_id: str) -> Call[Lease]:
    m = agent_pb2.ProvisionRequest(service=service, scope=list(scope), ttl_seconds=ttl, resource=resource,
                                   args=dict(args or {}), approval_id=approval_id)
    return Call(_request(provision=m), lambda r: Lease.from_proto(r.lease))


def revoke(lease_id: str) -> Call[bool]:
    return Call(_request(revoke=agent_pb2.RevokeRequest(lease_id=lease_id)), lambda r: r.revoked)


def rotate(service: str) -> Call[Rotation]:
    return Call(_request(rotate=agent_pb2.RotateRequest(service=service)), Rotation.from_proto)


def introspect(secret: str, approval_id: str) -> Call[Introspection]:
    return Call(_request(introspect=agent_pb2.IntrospectRequest(secret=secret, approval_id=approval_id)), Introspection.from_proto)


def list_leases(service: str, page_token: str) -> Call[tuple[list[LeaseInfo], str]]:
    m = agent_pb2.ListLeasesRequest(service=service, page_token=page_token)
    return Call(_request(list_leases=m), lambda r: ([LeaseInfo.from_proto(x) for x in r.leases], r.next_page_token))


def await_approval(approval_id: str, wait: float) -> Call[ApprovalStatus]:
    wait_ms = min(max(int(wait * 1000), 0), MAX_WAIT_MS)
    m = agent_pb2.AwaitApprovalRequest(approval_id=approval_id, wait_ms=wait_ms)
    return Call(_request(await_approval=m), ApprovalStatus.from_proto, wait=wait_ms / 1000)


def issue_identity(audience: str, capabilities: Sequence[str], ttl: int) -> Call[IdentityToken]:
    m = agent_pb2.IssueIdentityRequest(audience=audience, capabilities=list(capabilities), ttl_seconds=ttl)
    return Call(_request(issue_identity=m), IdentityToken.from_proto)


def validate_identity(token: str, audience: str) -> Call[Validation]:
    m = agent_pb2.ValidateIdentityRequest(token=token, audience=audience)
    return Call(_request(validate_identity=m), Validation.from_proto)
