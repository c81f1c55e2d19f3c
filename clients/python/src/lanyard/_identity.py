"""Agent identities: tokens the daemon signs, validated by the daemon or offline."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from lanyard._types import Claims


class InvalidToken(Exception):
    """An identity token that did not verify offline; `check` names what failed."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"the token failed its {check} check: {detail}")
        self.check = check


class AgentIdentity:
    """Issue and validate this agent's identity tokens (JWTs signed by lanyardd).

    Works with a Client or an AsyncClient (then `issue` and `validate` are awaited).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def issue(self, audience: str, *, capabilities: Sequence[str] = (), ttl: int = 0) -> Any:
        """A token for `audience` naming a subset of this agent's grants (empty: all)."""
        return self.client.issue_identity(audience, capabilities=capabilities, ttl=ttl)

    def validate(self, token: str, audience: str) -> Any:
        """The daemon's verdict on a token another agent presented: a `Validation`."""
        return self.client.validate_identity(token, audience)

    @staticmethod
    def verify_offline(token: str, jwks: str | Mapping[str, Any], *, audience: str, issuer: str) -> Claims:
        """Verifies a token without the daemon, against its JWKS (`lanyardctl jwks`), with
        joserfc (`pip install 'lanyard[jose]'`). Raises InvalidToken naming the failed check."""
        try:
            from joserfc import jwt
            from joserfc.errors import JoseError, SecurityWarning
            from joserfc.jwk import KeySet
        except ImportError:
            raise ImportError("offline verification needs joserfc: pip install 'lanyard[jose]'") from None
        key_set: Any = json.loads(jwks) if isinstance(jwks, str) else dict(jwks)
        keys = KeySet.import_key_set(key_set)
        try:
            with warnings.catch_warnings():
                # RFC 9864 names the algorithm Ed25519; lanyardd's tokens say EdDSA, as RFC 8037 did.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, keys, algorithms=["EdDSA"])
        except (JoseError, ValueError) as e:
            raise InvalidToken("signature", type(e).__name__) from None
        if decoded.header.get("typ") != "JWT":
            raise InvalidToken("typ", "not an identity token")
        registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                         aud={"essential": True, "value": audience},
                                         exp={"essential": True}, sub={"essential": True}, jti={"essential": True})
        try:
            registry.validate(decoded.claims)
        except JoseError as e:
            raise InvalidToken(getattr(e, "claim", None) or type(e).__name__, str(e)) from None
        c = decoded.claims
        return Claims(c["iss"], c["sub"], c.get("agent_id", ""), c["aud"], tuple(c.get("capabilities", ())),
                      c.get("iat", 0), c.get("nbf", 0), c["exp"], c["jti"])
