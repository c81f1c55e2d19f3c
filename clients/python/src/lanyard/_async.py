"""The asyncio client: many calls in flight on one connection, matched by id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from lanyard import _wire
from lanyard._errors import DeadlineExceeded, LanyardError, error_for
from lanyard._leases import AsyncManagedLease
from lanyard._types import (ApprovalStatus, Authorization, Hello, Identity, IdentityToken, Introspection, Lease,
                            LeaseInfo, Rotation, Validation)
from lanyard.v1 import common_pb2

T = TypeVar("T")


class _Connection:
    """One socket and its reader task, which hands each response to the call with its id."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.max_frame = max_frame
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.failure: LanyardError | None = None
        self._send_lock = asyncio.Lock()
        self._reader = self.loop.create_task(self._read_loop())

    def usable(self) -> bool:
        if self.failure is not None or self.loop is not asyncio.get_running_loop():
            return False
        # Idle and readable: the daemon closed it or sent a refusal.
        return bool(self.pending) or not _wire.stale(self.sock)

    def expect(self, request_id: int) -> asyncio.Future[Any]:
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending[request_id] = future
        return future

    def forget(self, request_id: int) -> None:
        self.pending.pop(request_id, None)

    async def send(self, data: bytes) -> None:
        async with self._send_lock:  # one frame at a time on the socket
            if self.failure is not None:
                raise self.failure
            try:
                await self.loop.sock_sendall(self.sock, data)
            except OSError as e:
                # The daemon closed: the reader finds the refusal it sent first, if any.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._reader), _wire.LAST_WORDS_TIMEOUT)
                raise self.fail(_wire.lost(e)) from None

    def fail(self, error: LanyardError) -> LanyardError:
        """Fails every call in flight with the connection's first failure (returned);
        the reader task closes the socket."""
        failure = self.failure = self.failure or error
        calls, self.pending = self.pending, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(failure)
        if asyncio.current_task() is not self._reader:
            self._reader.cancel()
        return failure

    async def close(self) -> None:
        self.fail(_wire.lost("the client was closed"))
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read_loop(self) -> None:
        try:
            while True:
                n = _wire.body_length(await self._recv(_wire.HEADER), self.max_frame)
                response = _wire.decode(await self._recv(n))
                if _wire.refusal(response):
                    raise error_for(response)
                future = self.pending.pop(response.id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except LanyardError as e:
            self.fail(e)
        except OSError as e:
            self.fail(_wire.lost(e))
        finally:
            self.sock.close()

    async def _recv(self, n: int) -> bytes:
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            k = await self.loop.sock_recv_into(self.sock, view[got:])
            if k == 0:
                raise _wire.lost("lanyardd closed the connection")
            got += k
        return bytes(buffer)


class AsyncClient:
    """An asyncio connection to lanyardd's agent socket; the methods of `Client`, as coroutines.

    Calls from many tasks share one connection: each response is matched to its call by
    id, in whatever order the daemon answers. The connection reopens on the next call
    after it broke. `timeout` (seconds, None for none) bounds each call.
    """

    def __init__(self, socket_path: str | None = None, *, timeout: float | None = _wire.DEFAULT_TIMEOUT,
                 max_frame: int = _wire.DEFAULT_MAX_FRAME) -> None:
        self.socket_path = _wire.socket_path(socket_path)
        self.timeout = timeout
        self.max_frame = max_frame
        self._connection: _Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection, failing calls still in flight; a later call reconnects."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def hello(self, client: str = "lanyard-python") -> Hello:
        return await self._call(_wire.hello(client))

    async def whoami(self) -> Identity:
        return (await self.hello()).caller

    async def authorize(self, capability: str, *, resource: str = "", args: Mapping[str, str] | None = None,
                        approval_id: str = "", dry_run: bool = False) -> Authorization:
        return await self._call(_wire.authorize(capability, resource, args, approval_id, dry_run))

    async def provision(self, service: str, *, scope: Sequence[str] = (), ttl: int = 0, resource: str = "",
                        args: Mapping[str, str] | None = None, approval_id: str = "") -> Lease:
        return await self._call(_wire.provision(service, scope, ttl, resource, args, approval_id))

    async def revoke(self, lease_id: str) -> bool:
        return await self._call(_wire.revoke(lease_id))

    async def rotate(self, service: str) -> Rotation:
        return await self._call(_wire.rotate(service))

    async def introspect(self, secret: str, *, approval_id: str = "") -> Introspection:
        return await self._call(_wire.introspect(secret, approval_id))

    async def list_leases(self, service: str = "") -> list[LeaseInfo]:
        leases, token = await self._call(_wire.list_leases(service, ""))
        while token:
            more, token = await self._call(_wire.list_leases(service, token))
            leases += more
        return leases

    async def await_approval(self, approval_id: str, *, wait: float = 0.0) -> ApprovalStatus:
        return await self._call(_wire.await_approval(approval_id, wait))

    async def issue_identity(self, audience: str, *, capabilities: Sequence[str] = (), ttl: int = 0) -> IdentityToken:
        return await self._call(_wire.issue_identity(audience, capabilities, ttl))

    async def validate_identity(self, token: str, audience: str) -> Validation:
        return await self._call(_wire.validate_identity(token, audience))

    def lease(self, service: str, *, scope: Sequence[str] = (), ttl: int = 0, resource: str = "",
              args: Mapping[str, str] | None = None, approval_id: str = "", renew_before: float | None = None,
              clock: Callable[[], float] = time.time) -> AsyncManagedLease:
        """`async with client.lease(...) as lease:` — see `Client.lease`."""
        return AsyncManagedLease(self, service, scope=scope, ttl=ttl, resource=resource, args=args,
                                 approval_id=approval_id, renew_before=renew_before, clock=clock)

    async def _call(self, call: _wire.Call[T]) -> T:
        call.request.id = next(self._ids)
        data = _wire.frame(call.request, self.max_frame)
        connection = await self._connected()
        future = connection.expect(call.request.id)
        try:
            await connection.send(data)
            timeout = None if self.timeout is None else self.timeout + call.wait
            response = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(common_pb2.CODE_DEADLINE_EXCEEDED, f"lanyardd did not answer within {self.timeout} s") from None
        finally:
            connection.forget(call.request.id)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a send that failed never awaited it
        return call.answer(response)

    async def _connected(self) -> _Connection:
        if self._connection is not None and self._connection.usable():
            return self._connection
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a lock serves one event loop
            self._loop, self._connecting = loop, asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and self._connection.usable():
                return self._connection
            old, self._connection = self._connection, None
            if old is not None:
                if old.loop is loop:
                    await old.close()
                else:
                    old.sock.close()  # its loop is gone, and its reader task with it
            sock = _wire.unix_socket()
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, self.socket_path), self.timeout)
            except (OSError, asyncio.TimeoutError) as e:
                sock.close()
                raise _wire.cannot_connect(self.socket_path, e) from None
            self._connection = _Connection(sock, self.max_frame)
            return self._connection
