"""Verifies a Lanyard token with joserfc against `lanyardctl jwks [--service S]` output.

usage: verify_jwt.py JWKS_FILE TOKEN_FILE AUDIENCE ISSUER [TYP]
TYP is the header's expected `typ`: JWT (identity tokens, the default) or at+jwt (a jwt
service's access tokens). Prints the subject on success; exits 1 with the reason otherwise.
"""
import json
import sys

from joserfc import jwt
from joserfc.jwk import KeySet

jwks_file, token_file, audience, issuer = sys.argv[1:5]
typ = sys.argv[5] if len(sys.argv) > 5 else "JWT"
keys = KeySet.import_key_set(json.load(open(jwks_file)))
token = jwt.decode(open(token_file).read().strip(), keys, algorithms=["EdDSA"])
jwt.JWTClaimsRegistry(
    iss={"essential": True, "value": issuer},
    aud={"essential": True, "value": audience},
    exp={"essential": True},
    jti={"essential": True},
).validate(token.claims)
assert token.header["alg"] == "EdDSA" and token.header["typ"] == typ, token.header
print(token.claims["sub"])
