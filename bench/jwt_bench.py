"""
CPU cost of one ``validate-jwt`` check (``TokenValidator.validate``) with
the keys already cached: an RS256 token (2048-bit key) and an ES256 token
(P-256) from an OpenID key set, with issuer, audience and one required
claim checked. No sockets: the key set is given directly.

Two figures per algorithm: a token seen for the first time (parse and
signature check: a client with a new token, or more clients than the
validator keeps tokens for) and the same token again (the verified-token
cache: claims and lifetime checked, no signature check).

    python bench/jwt_bench.py
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

from twisted.internet.task import Clock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.jwt import KeySet, TokenValidator, jwks_keys
from gateway.translate.policy import JwtClaim, ValidateJwt
from tests.jwt._support import AUDIENCE, ISSUER, NOW, ec_key, jwk, rsa_key, sign

URL = "https://idp.example/.well-known/openid-configuration"


class _Keys:
    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def keys(self, url: str) -> KeySet | None:
        return self._keys

    def unknown_kid(self, url: str) -> None:
        raise AssertionError("no refresh expected")


def main() -> None:
    rsa, ec = rsa_key(), ec_key()
    keys = jwks_keys({"keys": [jwk(rsa, "r1", "RS256"), jwk(ec, "e1", "ES256")]})
    clock = Clock()
    clock.advance(NOW)
    validator = TokenValidator(_Keys(keys), clock)
    step = ValidateJwt(header_name="Authorization", openid_config_urls=(URL,),
                       issuers=(ISSUER,), audiences=(AUDIENCE,),
                       required_claims=(JwtClaim("scp", "any", " ", ("read",)),))
    number = 2000
    for name, key, kid in (("RS256", rsa, "r1"), ("ES256", ec, "e1")):
        # Distinct tokens (a distinct jti each), so every call is a first sight.
        fresh = [sign(key, name, kid=kid, scp="read write", jti=str(i)) for i in range(number)]
        for token in fresh[:5]:
            assert isinstance(validator.validate(token, step, None), dict), name  # type: ignore[arg-type]
        times = []
        for _ in range(5):
            validator._verified.clear()
            tokens = iter(fresh)
            times.append(timeit.timeit(
                lambda: validator.validate(next(tokens), step, None),  # type: ignore[arg-type]
                number=number))
        print(f"{name}, first sight: {min(times) / number * 1e6:.1f} µs per validate "
              f"(best of 5 × {number})")
        token = fresh[0]
        best = min(timeit.repeat(lambda t=token: validator.validate(t, step, None),  # type: ignore[arg-type]
                                 number=number, repeat=5))
        print(f"{name}, same token again: {best / number * 1e6:.1f} µs per validate "
              f"(best of 5 × {number})")

if __name__ == "__main__":
    main()
