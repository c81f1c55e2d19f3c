"""Leases that manage themselves, and the CredentialProvider pattern over them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lanyard._errors import LanyardError, NotFound
from lanyard._flow import Flow, arun, run
from lanyard._types import Lease, Rotation

if TYPE_CHECKING:
    from lanyard._async import AsyncClient
    from lanyard._client import Client


class _LeaseState:
    """The current lease of a service and when it must be re-provisioned (both clients)."""

    def __init__(self, service: str, *, scope: Sequence[str], ttl: int, resource: str,
                 args: Mapping[str, str] | None, approval_id: str, renew_before: float | None,
                 clock: Callable[[], float]) -> None:
        self._request: dict[str, Any] = dict(service=service, scope=tuple(scope), ttl=ttl, resource=resource,
                                             args=dict(args or {}))
        # An approval is single-use: only the first provision carries it.
        self._approval_id = approval_id
        self._renew_before = renew_before
        self._clock = clock
        self._lease: Lease | None = None

    @property
    def current(self) -> Lease:
        """The lease as last provisioned (no renewal check)."""
        if self._lease is None:
            raise RuntimeError("the lease is not open: use it inside its with block")
        return self._lease

    @property
    def lease_id(self) -> str:
        return self.current.lease_id

    def _due(self, lease: Lease) -> bool:
        margin = self._renew_before if self._renew_before is not None else (lease.expires_at - lease.issued_at) / 5
        return self._clock() >= lease.expires_at - margin

    def _fresh(self) -> Flow[Lease]:
        if self._lease is not None and not self._due(self._lease):
            return self._lease
        approval, self._approval_id = self._approval_id, ""
        new: Lease = yield ("provision", {**self._request, "approval_id": approval})
        old, self._lease = self._lease, new
        if old is not None:
            yield from _revoke(old)
        return new

    def _end(self) -> Flow[None]:
        lease, self._lease = self._lease, None
        if lease is not None:
            yield from _revoke(lease)


def _revoke(lease: Lease) -> Flow[None]:
    try:
        yield ("revoke", {"lease_id": lease.lease_id})
    except NotFound:
        pass  # already gone: expired and cleaned up, or revoked by an operator


class ManagedLease(_LeaseState):
    """`with client.lease("github", scope=[...]) as lease:` — `lease.secret` is always fresh."""

    def __init__(self, client: Client, service: str, **options: Any) -> None:
        super().__init__(service, **options)
        self._client = client

    def __enter__(self) -> ManagedLease:
        self.get()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            run(self._end(), self._client)
        except LanyardError:
            if exc_type is None:
                raise
            # An exception is already on its way; the lease still ends at its expiry.

    def get(self) -> Lease:
        """The lease, re-provisioned first when it is near expiry (the old one revoked)."""
        return run(self._fresh(), self._client)

    @property
    def secret(self) -> str:
        return self.get().secret


class AsyncManagedLease(_LeaseState):
    """`async with client.lease(...) as lease:` — `await lease.get()` is always fresh."""

    def __init__(self, client: AsyncClient, service: str, **options: Any) -> None:
        super().__init__(service, **options)
        self._client = client

    async def __aenter__(self) -> AsyncManagedLease:
        await self.get()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await arun(self._end(), self._client)
        except LanyardError:
            if exc_type is None:
                raise

    async def get(self) -> Lease:
        return await arun(self._fresh(), self._client)

    async def secret(self) -> str:
        return (await self.get()).secret


@runtime_checkable
class CredentialProvider(Protocol):
    """Where an agent gets its credentials from: the shape agent code is written against."""

    def get(self, service: str) -> str: ...

    def provision(self, service: str, scope: Sequence[str] = (), ttl: int = 0) -> Lease: ...

    def revoke(self, lease_id: str) -> bool: ...

    def rotate(self, service: str) -> Rotation: ...


class LanyardCredentialProvider:
    """A CredentialProvider backed by lanyardd. `get(service)` returns the secret of a
    lease it keeps fresh per service (scope from `scopes`); `close()` revokes them."""

    def __init__(self, client: Client, *, scopes: Mapping[str, Sequence[str]] | None = None, ttl: int = 0,
                 renew_before: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._scopes = dict(scopes or {})
        self._options = dict(ttl=ttl, renew_before=renew_before, clock=clock)
        self._leases: dict[str, ManagedLease] = {}
        self._lock = threading.Lock()

    def get(self, service: str) -> str:
        with self._lock:
            lease = self._leases.get(service)
            if lease is None:
                lease = ManagedLease(self._client, service, scope=self._scopes.get(service, ()), resource="",
                                     args=None, approval_id="", **self._options)
                self._leases[service] = lease
            return lease.secret

    def provision(self, service: str, scope: Sequence[str] = (), ttl: int = 0) -> Lease:
        return self._client.provision(service, scope=scope, ttl=ttl)

    def revoke(self, lease_id: str) -> bool:
        return self._client.revoke(lease_id)

    def rotate(self, service: str) -> Rotation:
        return self._client.rotate(service)

    def close(self) -> None:
        """Revokes the leases `get` holds."""
        with self._lock:
            leases, self._leases = self._leases, {}
        for lease in leases.values():
            lease.__exit__(None, None, None)

    def __enter__(self) -> LanyardCredentialProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
