"""
What both sides of the gateway ⇄ configuration service wire must agree on:
the ``GatewayKey`` token grammar (format, parse, sign, verify, lifetime),
the entity kinds and the snapshot lists they travel in, the time
format of modification times, and the rules for an API's subscription
key names (which the gateway's file decoder applies too).

Both :mod:`gateway` (the client) and :mod:`configservice` (the server)
import this package, so the two cannot drift apart again: before it, the
token was parsed twice with different rules, and key names were
checked twice. It imports nothing of either, nor of Twisted: pure
functions over strings and numbers, no clock (callers pass ``now``), no
I/O.
"""

from ._keynames import DEFAULT_KEY_NAMES, KEY_NAME_PARTS, MAX_KEY_NAME, key_name_error
from ._kinds import ENTITY_LISTS, KINDS, SECRET_FIELDS, list_of, secret_fields
from ._times import format_time, parse_time
from ._token import (
    KEY_TYPES,
    MAX_LIFETIME,
    SCHEME,
    SIGNATURE_BYTES,
    Token,
    TokenError,
    check_lifetime,
    expiry_stamp,
    format_token,
    issue,
    looks_like_token,
    parse_token,
    sign,
    stamp_seconds,
    token_expiry,
    verify,
)

__all__ = [
    "DEFAULT_KEY_NAMES",
    "ENTITY_LISTS",
    "KEY_NAME_PARTS",
    "KEY_TYPES",
    "KINDS",
    "MAX_KEY_NAME",
    "MAX_LIFETIME",
    "SCHEME",
    "SECRET_FIELDS",
    "SIGNATURE_BYTES",
    "Token",
    "TokenError",
    "check_lifetime",
    "expiry_stamp",
    "format_time",
    "format_token",
    "issue",
    "key_name_error",
    "list_of",
    "looks_like_token",
    "parse_time",
    "parse_token",
    "secret_fields",
    "sign",
    "stamp_seconds",
    "token_expiry",
    "verify",
]
