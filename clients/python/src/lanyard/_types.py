"""The values the daemon answers with: frozen dataclasses and enums, no protobuf objects."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from lanyard.v1 import common_pb2


class Decision(enum.Enum):
    """The daemon's decision on a capability. Anything it did not say ALLOW is not ALLOW."""

    ALLOW = common_pb2.DECISION_ALLOW
    DENY = common_pb2.DECISION_DENY
    PENDING = common_pb2.DECISION_PENDING

    @classmethod
    def of(cls, value: int) -> Decision:
        # An unknown or unspecified decision denies.
        return cls(value) if value in cls._value2member_map_ else cls.DENY


class Risk(enum.Enum):
    """A capability's risk; UNSPECIFIED when the daemon named none (an uncatalogued capability)."""

    UNSPECIFIED = common_pb2.RISK_LEVEL_UNSPECIFIED
    LOW = common_pb2.RISK_LEVEL_LOW
    MEDIUM = common_pb2.RISK_LEVEL_MEDIUM
    HIGH = common_pb2.RISK_LEVEL_HIGH

    @classmethod
    def of(cls, value: int) -> Risk:
        return cls(value) if value in cls._value2member_map_ else cls.UNSPECIFIED


class ApprovalState(enum.Enum):
    """Where an approval stands; UNSPECIFIED when the daemon said nothing this client knows."""

    UNSPECIFIED = common_pb2.APPROVAL_STATE_UNSPECIFIED
    PENDING = common_pb2.APPROVAL_STATE_PENDING
    APPROVED = common_pb2.APPROVAL_STATE_APPROVED
    DENIED = common_pb2.APPROVAL_STATE_DENIED
    EXPIRED = common_pb2.APPROVAL_STATE_EXPIRED
    CONSUMED = common_pb2.APPROVAL_STATE_CONSUMED

    @classmethod
    def of(cls, value: int) -> ApprovalState:
        return cls(value) if value in cls._value2member_map_ else cls.UNSPECIFIED


@dataclass(frozen=True)
class Grant:
    capability: str
    risk: Risk


@dataclass(frozen=True)
class Identity:
    """Who the daemon sees on this connection (from the kernel, never from the request)."""

    authenticated: bool
    agent: str
    agent_id: str
    uri: str
    uid: int
    gid: int
    pid: int
    exe: str
    unit: str
    grants: tuple[Grant, ...]

    @classmethod
    def from_proto(cls, m: Any) -> Identity:
        return cls(m.authenticated, m.agent, m.agent_id, m.uri, m.uid, m.gid, m.pid, m.exe, m.unit,
                   tuple(Grant(g.capability, Risk.of(g.risk)) for g in m.grants))


@dataclass(frozen=True)
class Hello:
    server_version: str
    protocol_version: int
    caller: Identity

    @classmethod
    def from_proto(cls, m: Any) -> Hello:
        return cls(m.server_version, m.protocol_version, Identity.from_proto(m.caller))


@dataclass(frozen=True)
class DecisionPath:
    """What decided a verdict: the caller's own grant, its risk, and whether the catalog or the grant set it."""

    grant: str
    risk: Risk
    risk_source: str  # "catalog", or "grant" when the grant raised the catalog's risk
    catalog_risk: Risk

    @classmethod
    def from_proto(cls, m: Any) -> DecisionPath:
        return cls(m.grant, Risk.of(m.risk), m.risk_source, Risk.of(m.catalog_risk))


@dataclass(frozen=True)
class Authorization:
    """The answer to Authorize. PENDING carries the approval to wait for and its binding code.

    `reason_code` is the stable machine name of why (`granted`, `not_granted`, ...); `path`
    what decided it (None when no grant did); `dry_run` that nothing was changed."""

    decision: Decision
    risk: Risk
    reason: str
    approval_id: str = ""
    binding_code: str = ""
    approval_expires_at: int = 0
    reason_code: str = ""
    path: DecisionPath | None = None
    dry_run: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def denied(self) -> bool:
        return self.decision is Decision.DENY

    @property
    def pending(self) -> bool:
        return self.decision is Decision.PENDING

    @classmethod
    def from_proto(cls, m: Any) -> Authorization:
        return cls(Decision.of(m.decision), Risk.of(m.risk), m.reason, m.approval_id, m.binding_code, m.approval_expires_at,
                   m.reason_code, DecisionPath.from_proto(m.path) if m.HasField("path") else None, m.dry_run)


@dataclass(frozen=True)
class Lease:
    """A short-lived credential. `secret` is left out of repr so it never lands in a log."""

    lease_id: str
    service: str
    kind: str
    secret: str = field(repr=False)
    scope: tuple[str, ...]
    issued_at: int
    expires_at: int

    @classmethod
    def from_proto(cls, m: Any) -> Lease:
        return cls(m.lease_id, m.service, m.kind, m.secret, tuple(m.scope), m.issued_at, m.expires_at)


@dataclass(frozen=True)
class LeaseInfo:
    """One of the caller's active leases, as ListLeases shows it (never the secret)."""

    lease_id: str
    agent: str
    agent_id: str
    service: str
    kind: str
    scope: tuple[str, ...]
    issued_at: int
    expires_at: int
    state: str

    @classmethod
    def from_proto(cls, m: Any) -> LeaseInfo:
        return cls(m.lease_id, m.agent, m.agent_id, m.service, m.kind, tuple(m.scope), m.issued_at, m.expires_at, m.state)


@dataclass(frozen=True)
class Rotation:
    version: int
    revoked_leases: int

    @classmethod
    def from_proto(cls, m: Any) -> Rotation:
        return cls(m.version, m.revoked_leases)


@dataclass(frozen=True)
class Introspection:
    """What the daemon says about a secret; `active` is False for anything it will not vouch for."""

    active: bool
    agent: str
    agent_id: str
    service: str
    scope: tuple[str, ...]
    expires_at: int
    lease_id: str
    decision: Decision
    reason: str
    approval_id: str
    binding_code: str

    @classmethod
    def from_proto(cls, m: Any) -> Introspection:
        return cls(m.active, m.agent, m.agent_id, m.service, tuple(m.scope), m.expires_at, m.lease_id,
                   Decision.of(m.decision), m.reason, m.approval_id, m.binding_code)


@dataclass(frozen=True)
class ApprovalStatus:
    state: ApprovalState
    reason: str
    binding_code: str
    expires_at: int

    @classmethod
    def from_proto(cls, m: Any) -> ApprovalStatus:
        return cls(ApprovalState.of(m.state), m.reason, m.binding_code, m.expires_at)


@dataclass(frozen=True)
class IdentityToken:
    """A signed JWT naming this agent; `token` is left out of repr."""

    token: str = field(repr=False)
    expires_at: int = 0

    @classmethod
    def from_proto(cls, m: Any) -> IdentityToken:
        return cls(m.token, m.expires_at)


@dataclass(frozen=True)
class Claims:
    iss: str
    sub: str
    agent_id: str
    aud: str
    capabilities: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str

    @classmethod
    def from_proto(cls, m: Any) -> Claims:
        return cls(m.iss, m.sub, m.agent_id, m.aud, tuple(m.capabilities), m.iat, m.nbf, m.exp, m.jti)


@dataclass(frozen=True)
class Validation:
    """ValidateIdentity's answer: the claims when valid, else the name of the failed check."""

    valid: bool
    failed_check: str
    claims: Claims | None

    @classmethod
    def from_proto(cls, m: Any) -> Validation:
        return cls(m.valid, m.failed_check, Claims.from_proto(m.claims) if m.valid else None)
