"""The blocking client: one connection, one call at a time (thread-safe), reconnecting."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from lanyard import _wire
from lanyard._errors import DeadlineExceeded, Internal, LanyardError, error_for
from lanyard._leases import ManagedLease
from lanyard._types import (ApprovalStatus, Authorization, Hello, Identity, IdentityToken, Introspection, Lease,
                            LeaseInfo, Rotation, Validation)
from lanyard.v1 import common_pb2

T = TypeVar("T")


class Client:
    """A blocking connection to lanyardd's agent socket.

    Socket: `socket_path`, else `$LANYARD_SOCKET`, else /run/lanyard/agent.sock. The
    connection opens on the first call and again on the next call after it broke.
    `timeout` (seconds, None for none) bounds each call; a long poll adds its wait.
    """

    def __init__(self, socket_path: str | None = None, *, timeout: float | None = _wire.DEFAULT_TIMEOUT,
                 max_frame: int = _wire.DEFAULT_MAX_FRAME) -> None:
        self.socket_path = _wire.socket_path(socket_path)
        self.timeout = timeout
        self.max_frame = max_frame
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; a later call opens a new one."""
        with self._lock:
            self._drop()

    # The agent calls (DESIGN.md section 4).

    def hello(self, client: str = "lanyard-python") -> Hello:
        return self._call(_wire.hello(client))

    def whoami(self) -> Identity:
        """Who the daemon sees on this connection: the kernel's view, never a claim."""
        return self.hello().caller

    def authorize(self, capability: str, *, resource: str = "", args: Mapping[str, str] | None = None,
                  approval_id: str = "", dry_run: bool = False) -> Authorization:
        """The daemon's decision on `capability`; a question, so DENY is a value, not an error.
        `dry_run`: decide as if asked, opening or using no approval."""
        return self._call(_wire.authorize(capability, resource, args, approval_id, dry_run))

    def provision(self, service: str, *, scope: Sequence[str] = (), ttl: int = 0, resource: str = "",
                  args: Mapping[str, str] | None = None, approval_id: str = "") -> Lease:
        """A short-lived credential; raises ApprovalRequired when a human must approve first."""
        return self._call(_wire.provision(service, scope, ttl, resource, args, approval_id))

    def revoke(self, lease_id: str) -> bool:
        return self._call(_wire.revoke(lease_id))

    def rotate(self, service: str) -> Rotation:
        return self._call(_wire.rotate(service))

    def introspect(self, secret: str, *, approval_id: str = "") -> Introspection:
        return self._call(_wire.introspect(secret, approval_id))

    def list_leases(self, service: str = "") -> list[LeaseInfo]:
        """Every active lease of the caller (all pages), never their secrets."""
        leases, token = self._call(_wire.list_leases(service, ""))
        while token:
            more, token = self._call(_wire.list_leases(service, token))
            leases += more
        return leases

    def await_approval(self, approval_id: str, *, wait: float = 0.0) -> ApprovalStatus:
        """The approval's state, waiting up to `wait` seconds for it to change (long poll)."""
        return self._call(_wire.await_approval(approval_id, wait))

    def issue_identity(self, audience: str, *, capabilities: Sequence[str] = (), ttl: int = 0) -> IdentityToken:
        return self._call(_wire.issue_identity(audience, capabilities, ttl))

    def validate_identity(self, token: str, audience: str) -> Validation:
        return self._call(_wire.validate_identity(token, audience))

    def lease(self, service: str, *, scope: Sequence[str] = (), ttl: int = 0, resource: str = "",
              args: Mapping[str, str] | None = None, approval_id: str = "", renew_before: float | None = None,
              clock: Callable[[], float] = time.time) -> ManagedLease:
        """A lease as a context manager: provisioned on entry, revoked on exit (also on an
        exception), re-provisioned when `renew_before` seconds or less are left (default: a
        fifth of its lifetime). `clock` is the wall clock, in unix seconds."""
        return ManagedLease(self, service, scope=scope, ttl=ttl, resource=resource, args=args,
                            approval_id=approval_id, renew_before=renew_before, clock=clock)

    # The connection.

    def _call(self, call: _wire.Call[T]) -> T:
        return call.answer(self._exchange(call))

    def _exchange(self, call: _wire.Call[Any]) -> Any:
        with self._lock:
            call.request.id = next(self._ids)
            data = _wire.frame(call.request, self.max_frame)
            sock = self._connected()
            sock.settimeout(None if self.timeout is None else self.timeout + call.wait)
            try:
                sock.sendall(data)
                response = self._read(sock)
            except socket.timeout:
                self._drop()
                raise DeadlineExceeded(common_pb2.CODE_DEADLINE_EXCEEDED,
                                       f"lanyardd did not answer within {self.timeout} s; the next call reconnects") from None
            except OSError as e:
                error = self._last_words(sock) or _wire.lost(e)
                self._drop()
                raise error from None
            except LanyardError:
                self._drop()
                raise
            if response.id == call.request.id:
                return response
            self._drop()
            if _wire.refusal(response):
                raise error_for(response)
            raise Internal(common_pb2.CODE_INTERNAL, f"lanyardd answered request {call.request.id} with id {response.id}")

    def _connected(self) -> socket.socket:
        if self._sock is not None and not _wire.stale(self._sock):
            return self._sock
        self._drop()
        sock = _wire.unix_socket()
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise _wire.cannot_connect(self.socket_path, e) from None
        self._sock = sock
        return sock

    def _last_words(self, sock: socket.socket) -> LanyardError | None:
        """The refusal the daemon sent before it closed the connection (too many connections, ...), if any."""
        try:
            sock.settimeout(_wire.LAST_WORDS_TIMEOUT)
            response = self._read(sock)
        except (OSError, LanyardError):
            return None
        return error_for(response) if _wire.refusal(response) else None

    def _read(self, sock: socket.socket) -> Any:
        n = _wire.body_length(self._recv(sock, _wire.HEADER), self.max_frame)
        return _wire.decode(self._recv(sock, n))

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                raise _wire.lost("lanyardd closed the connection")
            got += k
        return bytes(buffer)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
