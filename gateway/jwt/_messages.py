"""
The messages a refused token gets: ``context.LastError.Message``, and the
client's envelope unless the step sets ``failed-validation-error-message``.

APIM validates tokens with Microsoft.IdentityModel and reports its
``IDX`` messages after ``JWT Validation Failed:``; the codes and the first
sentence here are IdentityModel's (its ``LogMessages``). IdentityModel
hides what it calls PII (token values, configured issuers and audiences)
by default, so these messages name no configured value and no value taken
from the token beyond a short, printable ``kid``. Where APIM's or
IdentityModel's wording is not published (required claims, an unknown
algorithm, keys not yet fetched) the text is ours; ``docs/policies.md``
says which.
"""

from __future__ import annotations

import time

__all__ = [
    "PREFIX",
    "algorithm_not_supported",
    "audience_mismatch",
    "audience_missing",
    "claim_mismatch",
    "claim_missing",
    "expired",
    "issuer_mismatch",
    "issuer_missing",
    "keys_not_fetched",
    "malformed",
    "missing_expiration",
    "nbf_after_exp",
    "no_keys",
    "not_yet_valid",
    "signature_invalid",
    "unknown_kid",
    "unsigned",
]

PREFIX = "JWT Validation Failed: "


def _when(seconds: float) -> str:
    """A claim time as UTC text (``2026-12-03T13:00:00Z``)."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return repr(seconds)


def _kid(kid: object) -> str:
    """The token's ``kid``, shown only when short and printable (it comes from the client)."""
    if isinstance(kid, str) and len(kid) <= 64 and kid.isprintable() and "'" not in kid:
        return kid
    return "[not shown]"


def malformed(reason: str) -> str:
    return f"{PREFIX}IDX12741: the token is not a well-formed JWT ({reason})."


def unsigned() -> str:
    return f"{PREFIX}IDX10504: Unable to validate signature, token does not have a signature."


def algorithm_not_supported(alg: object) -> str:
    shown = alg if isinstance(alg, str) and len(alg) <= 16 and alg.isprintable() else "?"
    return f"{PREFIX}IDX10634: Unable to create the SignatureProvider. Algorithm: '{shown}' is not supported."


def no_keys() -> str:
    return (f"{PREFIX}IDX10500: Signature validation failed. "
            "No security keys were provided to validate the signature.")


def keys_not_fetched() -> str:
    return (f"{PREFIX}IDX10500: Signature validation failed. The signing keys of the "
            "OpenID configuration have not been fetched yet.")


def unknown_kid(kid: object) -> str:
    return (f"{PREFIX}IDX10501: Signature validation failed. Unable to match key: "
            f"kid: '{_kid(kid)}'. The signing key was not found.")


def signature_invalid(tried: int, kid: object) -> str:
    if kid is None:
        return f"{PREFIX}IDX10503: Signature validation failed. Keys tried: {tried}."
    return f"{PREFIX}IDX10511: Signature validation failed. Keys tried: {tried}. kid: '{_kid(kid)}'."


def missing_expiration() -> str:
    return f"{PREFIX}IDX10225: Lifetime validation failed. The token is missing an Expiration Time."


def nbf_after_exp(nbf: float, exp: float) -> str:
    return (f"{PREFIX}IDX10224: Lifetime validation failed. The NotBefore: '{_when(nbf)}' "
            f"is after Expires: '{_when(exp)}'.")


def not_yet_valid(nbf: float, now: float) -> str:
    return (f"{PREFIX}IDX10222: Lifetime validation failed. The token is not yet valid. "
            f"ValidFrom: '{_when(nbf)}', Current time: '{_when(now)}'.")


def expired(exp: float, now: float) -> str:
    return (f"{PREFIX}IDX10223: Lifetime validation failed. The token is expired. "
            f"ValidTo: '{_when(exp)}', Current time: '{_when(now)}'.")


def audience_missing() -> str:
    return f"{PREFIX}IDX10206: Unable to validate audience. The token has no audience."


def audience_mismatch() -> str:
    return (f"{PREFIX}IDX10214: Audience validation failed. "
            "The token's audience is not one of the allowed audiences.")


def issuer_missing() -> str:
    return f"{PREFIX}IDX10211: Unable to validate issuer. The token has no issuer."


def issuer_mismatch() -> str:
    return (f"{PREFIX}IDX10205: Issuer validation failed. "
            "The token's issuer is not one of the allowed issuers.")


def claim_missing(name: str) -> str:
    return f"{PREFIX}Required claim '{name}' was not found in the token."


def claim_mismatch(name: str, match: str) -> str:
    need = "all of the required values" if match == "all" else "any of the required values"
    return f"{PREFIX}Claim '{name}' does not hold {need}."
