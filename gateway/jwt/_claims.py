"""
APIM's checks on a token's claims, after its signature: lifetime
(``exp``/``nbf`` with ``clock-skew``), ``audiences``, ``issuers`` and
``required-claims``, in IdentityModel's order (lifetime, audience, issuer),
then the required claims.

What each step needs is prepared once per step (:class:`ClaimRules`):
literal audiences and issuers become sets; only expressions are evaluated
per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.translate.policy import Expression, JwtClaim, PolicyContext, Text, ValidateJwt

from . import _messages as msg

__all__ = ["ClaimRules", "check_claims"]


@dataclass(frozen=True, slots=True)
class _Allowed:
    """Allowed values of ``aud`` or ``iss``: literals as a set, expressions evaluated per request."""

    literals: frozenset[str]
    expressions: tuple[Expression, ...]

    @classmethod
    def of(cls, values: tuple[Text, ...]) -> _Allowed | None:
        if not values:
            return None
        return cls(
            frozenset(v for v in values if isinstance(v, str)),
            tuple(v for v in values if not isinstance(v, str)),
        )

    def allows(self, candidates: list[str], context: PolicyContext) -> bool:
        if any(c in self.literals for c in candidates):
            return True
        return any(e.text(context) in candidates for e in self.expressions)


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """A step's claim checks, prepared once per step object."""

    require_expiration_time: bool
    clock_skew: float
    audiences: _Allowed | None
    issuers: _Allowed | None
    required: tuple[JwtClaim, ...]

    @classmethod
    def of(cls, step: ValidateJwt) -> ClaimRules:
        return cls(
            step.require_expiration_time,
            float(step.clock_skew),
            _Allowed.of(step.audiences),
            _Allowed.of(step.issuers),
            step.required_claims,
        )


def _number(value: object) -> float | None:
    """A NumericDate: a JSON number (``true`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _claim_text(value: object) -> str:
    """A claim value as .NET's JWT handler gives it: strings as they are, others as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _values(value: object, separator: str | None) -> list[str]:
    """A claim's values: the items of an array, else the value split on ``separator``."""
    if isinstance(value, list):
        return [_claim_text(v) for v in value]
    text = _claim_text(value)
    if separator:
        return text.split(separator)
    return [text]


def check_claims(claims: Mapping[str, object], rules: ClaimRules, now: float,
                 context: PolicyContext) -> str | None:
    """``None`` when the claims pass every check, else the message of the first that fails."""
    exp_value, nbf_value = claims.get("exp"), claims.get("nbf")
    exp = _number(exp_value)
    nbf = _number(nbf_value)
    if exp_value is not None and exp is None:
        return msg.malformed("exp is not a number")
    if nbf_value is not None and nbf is None:
        return msg.malformed("nbf is not a number")
    if exp is None and rules.require_expiration_time:
        return msg.missing_expiration()
    if exp is not None and nbf is not None and nbf > exp:
        return msg.nbf_after_exp(nbf, exp)
    if nbf is not None and nbf > now + rules.clock_skew:
        return msg.not_yet_valid(nbf, now)
    if exp is not None and exp < now - rules.clock_skew:
        return msg.expired(exp, now)

    if rules.audiences is not None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else (
            [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else [])
        if not audiences:
            return msg.audience_missing()
        if not rules.audiences.allows(audiences, context):
            return msg.audience_mismatch()

    if rules.issuers is not None:
        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss.strip():
            return msg.issuer_missing()
        if not rules.issuers.allows([iss], context):
            return msg.issuer_mismatch()

    for claim in rules.required:
        if claim.name not in claims:
            return msg.claim_missing(claim.name)
        if not claim.values:
            continue
        present = set(_values(claims[claim.name], claim.separator))
        if claim.match == "any":
            ok = any(v in present for v in claim.values)
        else:
            ok = all(v in present for v in claim.values)
        if not ok:
            return msg.claim_mismatch(claim.name, claim.match)
    return None
