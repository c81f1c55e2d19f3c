"""Lanyard's Python SDK: ask lanyardd for credentials and permission over its agent socket.

Every decision is the daemon's (it knows the caller from the kernel); this package asks,
waits for humans where the policy says so, and hands back plain values.
"""

from lanyard._async import AsyncClient
from lanyard._client import Client
from lanyard._errors import (ApprovalRequired, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument,
                             LanyardError, NotFound, PermissionDenied, ResourceExhausted, Unauthenticated,
                             Unavailable)
from lanyard._identity import AgentIdentity, InvalidToken
from lanyard._leases import AsyncManagedLease, CredentialProvider, LanyardCredentialProvider, ManagedLease
from lanyard._patterns import (ApprovalGate, ApprovalPending, UnauthorizedToolCall, aexecute_with_approval,
                               execute_with_approval, require_capability)
from lanyard._types import (ApprovalState, ApprovalStatus, Authorization, Claims, Decision, DecisionPath, Grant, Hello,
                            Identity, IdentityToken, Introspection, Lease, LeaseInfo, Risk, Rotation, Validation)

__all__ = [
    "AgentIdentity", "ApprovalGate", "ApprovalPending", "ApprovalRequired", "ApprovalState", "ApprovalStatus",
    "AsyncClient", "AsyncManagedLease", "Authorization", "Claims", "Client", "CredentialProvider", "DeadlineExceeded",
    "Decision", "DecisionPath", "FailedPrecondition", "Grant", "Hello", "Identity", "IdentityToken", "Internal", "Introspection",
    "InvalidArgument", "InvalidToken", "LanyardCredentialProvider", "LanyardError", "Lease", "LeaseInfo",
    "ManagedLease", "NotFound", "PermissionDenied", "ResourceExhausted", "Risk", "Rotation", "UnauthorizedToolCall",
    "Unauthenticated", "Unavailable", "Validation", "aexecute_with_approval", "execute_with_approval",
    "require_capability",
]
