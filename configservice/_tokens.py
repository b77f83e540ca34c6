"""
Gateway tokens: ``GatewayKey <gateway-id>&<yyyyMMddHHmm>&<signature>``.

The signature is ``base64(HMAC-SHA512(key, "<gateway-id>\\n<expiry>"))``,
the scheme of the Azure API Management self-hosted gateway, with the key
text's UTF-8 bytes as the HMAC key (as upstream does). Each gateway has two
keys, primary and secondary: a token verifies if it matches either, so
regenerating one key (rotation) cuts off only the tokens made from it.

Pure functions: no clock (the caller passes ``now``), no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

__all__ = [
    "KEY_TYPES",
    "MAX_LIFETIME",
    "SCHEME",
    "Token",
    "TokenError",
    "expiry_stamp",
    "issue",
    "new_key",
    "parse_token",
    "sign",
    "token_expiry",
    "verify",
]

#: The longest a token may be valid: 30 days (as upstream).
MAX_LIFETIME = 30 * 86400.0
#: The key names of a gateway.
KEY_TYPES = ("primary", "secondary")
#: The authorization scheme, also the prefix of the issued value.
SCHEME = "GatewayKey"

_STAMP = "%Y%m%d%H%M"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,79}$")


class TokenError(ValueError):
    """A token that cannot be used; ``str()`` is the reason, safe to log and return."""


@dataclass(frozen=True)
class Token:
    """
    A parsed token. ``signature`` is never logged; ``expires`` is seconds
    since the epoch (the stamp is UTC, to the minute).
    """

    gateway_id: str
    stamp: str
    signature: str
    expires: float

    def header(self) -> str:
        return f"{SCHEME} {self.gateway_id}&{self.stamp}&{self.signature}"


def new_key() -> str:
    """A fresh gateway key: 64 random bytes, base64 text."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def expiry_stamp(seconds: float) -> str:
    """``seconds`` since the epoch as ``yyyyMMddHHmm`` UTC, rounded down to the minute."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(_STAMP)


def _stamp_seconds(stamp: str) -> float:
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc).timestamp()


def sign(key: str, gateway_id: str, stamp: str) -> str:
    """The signature of ``gateway_id`` and ``stamp`` with ``key``."""
    digest = hmac.new(
        key.encode("utf-8"), f"{gateway_id}\n{stamp}".encode("utf-8"), hashlib.sha512
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def token_expiry(requested: float, now: float) -> str:
    """
    The stamp of a token asked to expire at ``requested``: rounded down to
    the minute, so never later than asked.

    :raises ValueError: in the past (after rounding) or more than
        :data:`MAX_LIFETIME` from ``now``.
    """
    stamp = expiry_stamp(requested)
    expires = _stamp_seconds(stamp)
    if expires <= now:
        raise ValueError("must be in the future (tokens expire on a whole minute, UTC)")
    if expires > now + MAX_LIFETIME:
        raise ValueError("must be at most 30 days from now")
    return stamp


def issue(gateway_id: str, key: str, stamp: str) -> str:
    """The ``Authorization`` value of a token: ``GatewayKey <id>&<stamp>&<signature>``."""
    return f"{SCHEME} {gateway_id}&{stamp}&{sign(key, gateway_id, stamp)}"


def parse_token(authorization: str | None) -> Token:
    """
    Parse an ``Authorization`` header value (the scheme is matched without
    regard to case; the bare ``<id>&<expiry>&<signature>`` is accepted too,
    as ``config.service.auth`` may hold either).

    :raises TokenError: missing or malformed.
    """
    if not authorization or not authorization.strip():
        raise TokenError(f"missing Authorization: {SCHEME} <gateway-id>&<expiry>&<signature>")
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == SCHEME.lower():
        value = rest.strip()
    elif rest:
        raise TokenError(f"the Authorization scheme must be {SCHEME}")
    parts = value.split("&")
    if len(parts) != 3:
        raise TokenError("malformed token: expected <gateway-id>&<yyyyMMddHHmm>&<signature>")
    gateway_id, stamp, signature = parts
    if not _ID.match(gateway_id):
        raise TokenError("malformed token: bad gateway id")
    if len(stamp) != 12 or not stamp.isdigit():
        raise TokenError("malformed token: the expiry must be yyyyMMddHHmm")
    try:
        expires = _stamp_seconds(stamp)
    except ValueError:
        raise TokenError("malformed token: the expiry is not a valid date") from None
    if not signature:
        raise TokenError("malformed token: empty signature")
    return Token(gateway_id, stamp, signature, expires)


def verify(token: Token, keys: Iterable[str]) -> bool:
    """
    Whether ``token``'s signature matches one of ``keys``. Every key is
    checked, with :func:`hmac.compare_digest`, so the time taken does not
    tell which key matched or how much of the signature did.
    """
    given = token.signature.encode("utf-8", "replace")
    matched = False
    for key in keys:
        expected = sign(key, token.gateway_id, token.stamp).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return matched
