"""
Gateway tokens, as the service issues and checks them.

The grammar, the signature and the lifetime rule are :mod:`cloudproto`'s,
shared with the gateway, so the two sides of the wire read a token the same
way; this module adds what only the issuer needs: new keys.

Pure functions: no clock (the caller passes ``now``), no I/O.
"""

from __future__ import annotations

import base64
import secrets

from cloudproto import (
    KEY_TYPES,
    MAX_LIFETIME,
    SCHEME,
    Token,
    TokenError,
    check_lifetime,
    expiry_stamp,
    issue,
    parse_token,
    sign,
    token_expiry,
    verify,
)

__all__ = [
    "KEY_TYPES",
    "MAX_LIFETIME",
    "SCHEME",
    "Token",
    "TokenError",
    "check_lifetime",
    "expiry_stamp",
    "issue",
    "new_key",
    "parse_token",
    "sign",
    "token_expiry",
    "verify",
]


def new_key() -> str:
    """A fresh gateway key: 64 random bytes, base64 text."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")
