"""Identity tokens against real lanyardd processes and the real PyPI verifiers (issue 20):
delegated sub-agent tokens (acceptance 1) and SPIFFE JWT-SVIDs signed with ES256, next to
EdDSA tokens that keep validating (acceptance 4).

Tokens are asked for with `lanyardctl identity issue` as the agent's uid and validated with
`lanyardctl identity validate` (Lanyard's ValidateIdentity), PyJWT, joserfc and py-spiffe
against `lanyardctl jwks`.
"""

from __future__ import annotations

import json
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from spiffe import JwtBundle, JwtSvid, TrustDomain

from lanyard_harness import Daemon, User

TD = "py.internal"
PARENT = f"spiffe://{TD}/agent/planner"


def policy(agent: User, *, alg: str = "EdDSA", max_depth: int = 3, other: User | None = None) -> str:
    """`planner` may delegate (HIGH `github:admin` too, never HIGH `github:delete`); without delegation
    when `max_depth` is 0. `other`: a second agent, `other`, that may delegate too."""
    return f"""trust_domain: {TD}
identity: {{ alg: {alg} }}
services:
  github: {{ kind: opaque }}
capabilities:
  github:read: {{ risk: low }}
  github:write: {{ risk: medium }}
  github:admin: {{ risk: high }}
  github:delete: {{ risk: high }}
agents:
  planner:
    uid: {agent.uid}
    grants: [github:read, github:write, github:admin, github:delete]
""" + (f"    delegation: {{ max_depth: {max_depth}, capabilities: [github:admin] }}\n" if max_depth else "") + (
        f"  other: {{ uid: {other.uid}, grants: [github:read], delegation: {{ max_depth: 1 }} }}\n" if other else "")


def issue(d: Daemon, agent: User, audience: str, *, delegate: str = "", parent: str = "", ttl: int = 0,
          capabilities: tuple[str, ...] = ()) -> Any:
    """`lanyardctl identity issue` as `agent`: the parsed JSON on success, else the failed run."""
    args = ["identity", "issue", "--json", "--audience", audience, "--ttl", str(ttl)]
    args += [f"--capability={c}" for c in capabilities]
    if delegate:
        args += ["--delegate", delegate] + (["--parent-token-stdin"] if parent else [])
    r = d.ctl(args, as_user=agent, stdin=parent or None)
    return json.loads(r.stdout) if r.returncode == 0 else r


def validate(d: Daemon, agent: User, token: str, audience: str) -> dict[str, Any]:
    """Lanyard's own ValidateIdentity (`lanyardctl identity validate -`), as `agent`."""
    r = d.ctl(["identity", "validate", "--json", "--audience", audience, "-"], as_user=agent, stdin=token)
    assert r.returncode in (0, 2), r.stderr
    return json.loads(r.stdout)


def refused(result: Any, reason: str) -> None:
    """`result` is a refused issue whose message says `reason`."""
    assert not isinstance(result, dict), f"issued, expected a refusal: {result}"
    assert result.returncode != 0 and reason in result.stderr, result.stderr


def jwks(d: Daemon) -> str:
    return d.ctl_ok(["jwks"])


# Acceptance 1: delegation.

def test_sub_agent_tokens_carry_their_chain_and_never_more_than_the_parent(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user))
    parent = issue(d, agent_user, "orchestrator", capabilities=("github:read", "github:write", "github:admin"), ttl=600)
    child = issue(d, agent_user, "reviewer-peer", delegate="reviewer", parent=parent["token"], capabilities=("github:read", "github:admin"))
    v = validate(d, agent_user, child["token"], "reviewer-peer")
    assert v["valid"], v
    assert v["sub"] == f"{PARENT}/sub/reviewer" and v["actors"] == [PARENT]
    assert v["capabilities"] == ["github:admin", "github:read"]
    assert child["expires_at"] <= parent["expires_at"]

    grandchild = issue(d, agent_user, "linter-peer", delegate="linter", parent=child["token"])
    g = validate(d, agent_user, grandchild["token"], "linter-peer")
    assert g["valid"] and g["sub"] == f"{PARENT}/sub/reviewer/sub/linter", g
    assert g["actors"] == [f"{PARENT}/sub/reviewer", PARENT]
    assert g["capabilities"] == ["github:admin", "github:read"]

    # Straight from the agent's own identity (no parent token): depth 1, its grants, HIGH ones only when delegable.
    direct = issue(d, agent_user, "peer", delegate="scout")
    s = validate(d, agent_user, direct["token"], "peer")
    assert s["valid"] and s["actors"] == [PARENT] and s["capabilities"] == ["github:admin", "github:read", "github:write"], s


def test_delegation_refusals_say_why(daemon_factory, agent_user: User, stranger_user: User) -> None:
    d = daemon_factory(policy(agent_user, other=stranger_user))
    parent = issue(d, agent_user, "orchestrator", capabilities=("github:read",), ttl=120)
    refused(issue(d, agent_user, "p", delegate="sub", parent=parent["token"], capabilities=("github:write",)),
            "the parent does not hold 'github:write'")
    refused(issue(d, agent_user, "p", delegate="sub", capabilities=("github:delete",)),
            "'github:delete' is a HIGH grant agent 'planner' may not delegate")
    refused(issue(d, agent_user, "p", delegate="sub", parent=parent["token"], ttl=600),
            "ttl_seconds 600 would outlive the parent token")
    refused(issue(d, agent_user, "p", delegate="Not_A_Slug"), "is not a slug")
    others = issue(d, stranger_user, "planner")["token"]
    refused(issue(d, agent_user, "p", delegate="sub", parent=others), "the parent token is not agent 'planner''s")
    refused(issue(d, agent_user, "p", delegate="sub", parent=parent["token"] + "x"), "the parent token is not valid (failed check: signature)")
    # Depth: agent -> a -> b -> c is 3 hops (the policy's max_depth); a fourth is refused.
    token = parent["token"]
    for name in ("a", "b", "c"):
        token = issue(d, agent_user, "p", delegate=name, parent=token)["token"]
    assert validate(d, agent_user, token, "p")["sub"] == f"{PARENT}/sub/a/sub/b/sub/c"
    refused(issue(d, agent_user, "p", delegate="d", parent=token), "depth 4 exceeds agent 'planner''s delegation max_depth 3")


def test_no_delegation_without_the_policy_saying_so(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user, max_depth=0))
    refused(issue(d, agent_user, "p", delegate="sub"), "agent 'planner' may not delegate: the policy gives it no delegation")
    assert isinstance(issue(d, agent_user, "p"), dict)  # its own identity, as before


def test_revoking_a_parent_revokes_every_token_delegated_from_it(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user))
    parent = issue(d, agent_user, "orchestrator", ttl=600)
    child = issue(d, agent_user, "p", delegate="reviewer", parent=parent["token"])
    grandchild = issue(d, agent_user, "p", delegate="linter", parent=child["token"])
    sibling = issue(d, agent_user, "p", delegate="other")  # delegated from the agent itself, not from that token
    assert validate(d, agent_user, grandchild["token"], "p")["valid"]
    parent_jti = validate(d, agent_user, parent["token"], "orchestrator")["jti"]
    d.ctl_ok(["identity", "revoke", parent_jti])
    for token in (child["token"], grandchild["token"]):
        v = validate(d, agent_user, token, "p")
        assert not v["valid"] and v["failed_check"] == "revoked", v
    assert validate(d, agent_user, sibling["token"], "p")["valid"]
    refused(issue(d, agent_user, "p", delegate="late", parent=parent["token"]), "the parent token is not valid (failed check: revoked)")


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_pyjwt_and_joserfc_verify_a_delegated_token_and_see_act(daemon_factory, agent_user: User, alg: str) -> None:
    d = daemon_factory(policy(agent_user, alg=alg))
    parent = issue(d, agent_user, "orchestrator", ttl=600)
    child = issue(d, agent_user, "reviewer-peer", delegate="reviewer", parent=parent["token"])
    grandchild = issue(d, agent_user, "linter-peer", delegate="linter", parent=child["token"])
    keys = json.loads(jwks(d))
    header = pyjwt.get_unverified_header(grandchild["token"])
    assert header["alg"] == alg and header["typ"] == "JWT"
    key = pyjwt.PyJWK(next(k for k in keys["keys"] if k["kid"] == header["kid"]))
    claims = pyjwt.decode(grandchild["token"], key, algorithms=[alg], audience="linter-peer", issuer=f"spiffe://{TD}")
    assert claims["sub"] == f"{PARENT}/sub/reviewer/sub/linter"
    assert claims["act"]["sub"] == f"{PARENT}/sub/reviewer" and claims["act"]["act"]["sub"] == PARENT

    token = jose_jwt.decode(grandchild["token"], KeySet.import_key_set(keys), algorithms=[alg])
    jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": "linter-peer"}, exp={"essential": True}).validate(token.claims)
    assert token.claims["act"]["act"]["sub"] == PARENT


# Acceptance 4: SPIFFE JWT-SVIDs (ES256), EdDSA kept, Ed25519 accepted.

def test_py_spiffe_validates_an_es256_token_as_a_jwt_svid_for_its_audience_only(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user, alg="ES256"))
    token = issue(d, agent_user, "billing")["token"]
    published = jwks(d)
    assert [(k["kty"], k["crv"], k["alg"]) for k in json.loads(published)["keys"]] == [("EC", "P-256", "ES256")]
    bundle = JwtBundle.parse(TrustDomain(TD), published.encode())
    svid = JwtSvid.parse_and_validate(token, bundle, {"billing"})
    assert str(svid.spiffe_id) == PARENT and svid.audience == {"billing"}
    with pytest.raises(Exception, match="audience|Audience"):
        JwtSvid.parse_and_validate(token, bundle, {"payroll"})
    assert validate(d, agent_user, token, "billing")["valid"]
    # A delegated sub-agent's token is a JWT-SVID too, for the sub-agent's SPIFFE ID.
    child = issue(d, agent_user, "billing", delegate="worker")["token"]
    assert str(JwtSvid.parse_and_validate(child, bundle, {"billing"}).spiffe_id) == f"{PARENT}/sub/worker"
    # The P-256 key is sealed and reopened: after a restart the same key signs (no new kid) and both tokens hold.
    d.restart()
    again = issue(d, agent_user, "billing")["token"]
    assert pyjwt.get_unverified_header(again)["kid"] == pyjwt.get_unverified_header(token)["kid"]
    assert jwks(d) == published
    for t in (token, again):
        assert JwtSvid.parse_and_validate(t, bundle, {"billing"}) and validate(d, agent_user, t, "billing")["valid"]


def test_eddsa_tokens_keep_validating_with_pyjwt_joserfc_and_lanyard(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user))
    token = issue(d, agent_user, "billing")["token"]
    keys = json.loads(jwks(d))
    assert [(k["kty"], k["crv"], k["alg"]) for k in keys["keys"]] == [("OKP", "Ed25519", "EdDSA")]
    claims = pyjwt.decode(token, pyjwt.PyJWK(keys["keys"][0]), algorithms=["EdDSA"], audience="billing")
    assert claims["sub"] == PARENT
    decoded = jose_jwt.decode(token, KeySet.import_key_set(keys), algorithms=["EdDSA"])
    assert decoded.claims["sub"] == PARENT
    assert validate(d, agent_user, token, "billing")["valid"]
    # What issue 20 saw: py-spiffe refuses EdDSA, which the JWT-SVID specification does not allow.
    with pytest.raises(Exception, match="EdDSA"):
        JwtSvid.parse_and_validate(token, JwtBundle.parse(TrustDomain(TD), json.dumps(keys).encode()), {"billing"})


def test_switching_the_policy_to_es256_keeps_earlier_eddsa_tokens_valid(daemon_factory, agent_user: User) -> None:
    d = daemon_factory(policy(agent_user))
    eddsa = issue(d, agent_user, "billing")["token"]
    d.write_policy(policy(agent_user, alg="ES256"))
    d.ctl_ok(["policy", "reload"])
    es256 = issue(d, agent_user, "billing")["token"]
    assert pyjwt.get_unverified_header(es256)["alg"] == "ES256"
    published = json.loads(jwks(d))
    assert sorted(k["alg"] for k in published["keys"]) == ["ES256", "EdDSA"]
    assert validate(d, agent_user, eddsa, "billing")["valid"] and validate(d, agent_user, es256, "billing")["valid"]
