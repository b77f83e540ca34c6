"""
Gateway tokens: ``GatewayKey <gateway-id>&<yyyyMMddHHmm>&<signature>``.

The signature is ``base64(HMAC-SHA512(key, "<gateway-id>\\n<yyyyMMddHHmm>"))``,
the scheme of the Azure API Management self-hosted gateway, with the key
text's UTF-8 bytes as the HMAC key (as upstream does). Each gateway has two
keys, primary and secondary: a token verifies if it matches either, so
regenerating one key (rotation) cuts off only the tokens made from it.

One grammar for both sides, the stricter of the two that used to exist:

* the scheme word is optional (``config.service.auth`` may hold the bare
  value), matched without regard to case (RFC 9110 §11.1: auth schemes are
  case-insensitive) and separated from the value by spaces; any other
  scheme is refused;
* exactly three ``&``-separated parts: a ``&`` inside the signature is a
  malformed token, not part of the signature;
* the gateway id is an entity id (1–80 letters, digits, ``.``, ``_``,
  ``~``, ``-``, starting with a letter or digit), so it is safe in a URL
  path and a log line;
* the expiry is 12 ASCII digits forming a real UTC minute;
* the signature is standard base64 of exactly 64 bytes (an HMAC-SHA512),
  so a truncated or mangled token is reported where it is read, not as a
  forged one by the service.

Pure functions: no clock (the caller passes ``now``), no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

__all__ = [
    "KEY_TYPES",
    "MAX_LIFETIME",
    "SCHEME",
    "SIGNATURE_BYTES",
    "Token",
    "TokenError",
    "check_lifetime",
    "expiry_stamp",
    "format_token",
    "issue",
    "looks_like_token",
    "parse_token",
    "sign",
    "stamp_seconds",
    "token_expiry",
    "verify",
]

#: The longest a token may be valid: 30 days (as upstream).
MAX_LIFETIME = 30 * 86400.0
#: The key names of a gateway.
KEY_TYPES = ("primary", "secondary")
#: The authorization scheme, also the prefix of the issued value.
SCHEME = "GatewayKey"
#: The length of a signature once base64-decoded: one HMAC-SHA512.
SIGNATURE_BYTES = 64

_STAMP = "%Y%m%d%H%M"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,79}")
_DIGITS = re.compile(r"[0-9]{12}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
#: Clock skew tolerated between an issuer and a verifier on the 30-day limit.
_SKEW = 300.0


class TokenError(ValueError):
    """A token that cannot be used; ``str()`` is the reason, safe to log and return."""


@dataclass(frozen=True, slots=True)
class Token:
    """
    A parsed token.

    :ivar gateway_id: the gateway it was issued for (the id in the URLs).
    :ivar stamp: the expiry as written, ``yyyyMMddHHmm`` UTC.
    :ivar signature: the base64 signature; never logged, never in ``repr``.
    :ivar expires: the expiry, seconds since the epoch.
    """

    gateway_id: str
    stamp: str
    signature: str = field(repr=False)
    expires: float

    def header(self) -> str:
        """The ``Authorization`` header value: ``GatewayKey <id>&<stamp>&<signature>``."""
        return format_token(self.gateway_id, self.stamp, self.signature)


def expiry_stamp(seconds: float) -> str:
    """``seconds`` since the epoch as ``yyyyMMddHHmm`` UTC, rounded down to the minute."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(_STAMP)


def stamp_seconds(stamp: str) -> float:
    """
    A ``yyyyMMddHHmm`` UTC stamp as seconds since the epoch.

    :raises ValueError: not 12 ASCII digits forming a real minute.
    """
    if not _DIGITS.fullmatch(stamp):
        raise ValueError(f"not yyyyMMddHHmm: {stamp!r}")
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc).timestamp()


def sign(key: str, gateway_id: str, stamp: str) -> str:
    """The signature of ``gateway_id`` and ``stamp`` with ``key``."""
    digest = hmac.new(
        key.encode("utf-8"), f"{gateway_id}\n{stamp}".encode("utf-8"), hashlib.sha512
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def format_token(gateway_id: str, stamp: str, signature: str) -> str:
    """The ``Authorization`` value made of the three parts."""
    return f"{SCHEME} {gateway_id}&{stamp}&{signature}"


def issue(gateway_id: str, key: str, stamp: str) -> str:
    """The ``Authorization`` value of a token: ``GatewayKey <id>&<stamp>&<signature>``."""
    return format_token(gateway_id, stamp, sign(key, gateway_id, stamp))


def token_expiry(requested: float, now: float) -> str:
    """
    The stamp of a token asked to expire at ``requested``: rounded down to
    the minute, so never later than asked.

    :raises ValueError: in the past (after rounding) or more than
        :data:`MAX_LIFETIME` from ``now``.
    """
    stamp = expiry_stamp(requested)
    expires = stamp_seconds(stamp)
    if expires <= now:
        raise ValueError("must be in the future (tokens expire on a whole minute, UTC)")
    if expires > now + MAX_LIFETIME:
        raise ValueError("must be at most 30 days from now")
    return stamp


def looks_like_token(value: str) -> bool:
    """
    Whether a ``config.service.auth`` value is a token rather than the path
    of a file holding one: it starts with the scheme word or holds a ``&``
    (which no sensible path does).
    """
    text = value.strip()
    return text[: len(SCHEME) + 1].lower() == SCHEME.lower() + " " or "&" in text


def parse_token(authorization: str | None) -> Token:
    """
    Parse an ``Authorization`` header value or a ``config.service.auth``
    token (see the module docstring for the grammar). The signature's
    shape is checked here; whether it is *right* only the holder of the
    keys can tell (:func:`verify`).

    :raises TokenError: missing or malformed; the message says which part.
    """
    if authorization is None or not authorization.strip():
        raise TokenError(f"missing Authorization: {SCHEME} <gateway-id>&<expiry>&<signature>")
    value = authorization.strip()
    scheme, space, rest = value.partition(" ")
    if space and "&" not in scheme:
        if scheme.lower() != SCHEME.lower():
            raise TokenError(f"the Authorization scheme must be {SCHEME}")
        value = rest.lstrip(" ")
    parts = value.split("&")
    if len(parts) != 3:
        raise TokenError("malformed token: expected <gateway-id>&<yyyyMMddHHmm>&<signature>")
    gateway_id, stamp, signature = parts
    if not _ID.fullmatch(gateway_id):
        raise TokenError("malformed token: bad gateway id")
    if not _DIGITS.fullmatch(stamp):
        raise TokenError("malformed token: the expiry must be yyyyMMddHHmm")
    try:
        expires = stamp_seconds(stamp)
    except ValueError:
        raise TokenError("malformed token: the expiry is not a valid date") from None
    if not signature:
        raise TokenError("malformed token: empty signature")
    if not _BASE64.fullmatch(signature) or len(signature) % 4:
        raise TokenError("malformed token: the signature is not base64")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("malformed token: the signature is not base64") from None
    if len(raw) != SIGNATURE_BYTES:
        raise TokenError(
            f"malformed token: the signature must be {SIGNATURE_BYTES} bytes "
            f"(an HMAC-SHA512), not {len(raw)}"
        )
    return Token(gateway_id, stamp, signature, expires)


def check_lifetime(token: Token, now: float) -> None:
    """
    Refuse a token that expired, or whose expiry lies more than
    :data:`MAX_LIFETIME` ahead: no issuer following this protocol makes
    one, so it was minted with a leaked key by someone else's rules. A few
    minutes of clock skew between issuer and verifier are tolerated.

    :raises TokenError: expired, or valid for too long.
    """
    if now >= token.expires:
        raise TokenError(
            f"the token expired at {datetime.fromtimestamp(token.expires, timezone.utc):%Y-%m-%dT%H:%MZ}"
        )
    if token.expires > now + MAX_LIFETIME + _SKEW:
        raise TokenError("the token is valid for more than 30 days, which no issuer allows")


def verify(token: Token, keys: Iterable[str]) -> bool:
    """
    Whether ``token``'s signature matches one of ``keys``. Every key is
    checked, with :func:`hmac.compare_digest`, so the time taken does not
    tell which key matched or how much of the signature did.
    """
    given = token.signature.encode("ascii", "replace")
    matched = False
    for key in keys:
        expected = sign(key, token.gateway_id, token.stamp).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return matched
