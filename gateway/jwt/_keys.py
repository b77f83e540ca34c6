"""
Signing keys as joserfc keys, indexed by ``kid``: from a step's
``issuer-signing-keys`` (once per step object) and from a JWKS document
(once per fetch). Nothing here runs per request.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, OctKey, RSAKey

from gateway.translate.policy import JwtKey

__all__ = ["KeySet", "MalformedDocument", "jwks_keys", "step_keys"]

#: Key types the supported algorithms use (RSA: RS*/PS*, EC: ES*, oct: HS*).
KEY_TYPES = frozenset({"RSA", "EC", "oct"})


class MalformedDocument(ValueError):
    """A discovery document or JWKS that cannot be used (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """
    Verification keys, ready for lookup.

    :ivar keys: every key, in document order.
    :ivar by_kid: the keys with a ``kid``, by ``kid`` (a JWKS may reuse one
        ``kid`` for several keys, e.g. one per algorithm).
    :ivar kidless: the keys without a ``kid``: tried for any token.
    """

    keys: tuple[Key, ...] = ()
    by_kid: Mapping[str, tuple[Key, ...]] = field(default_factory=dict)
    kidless: tuple[Key, ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str | None, Key]]) -> KeySet:
        keys: list[Key] = []
        by_kid: dict[str, list[Key]] = {}
        kidless: list[Key] = []
        for kid, key in pairs:
            keys.append(key)
            if kid is None:
                kidless.append(key)
            else:
                by_kid.setdefault(kid, []).append(key)
        return cls(tuple(keys), {k: tuple(v) for k, v in by_kid.items()}, tuple(kidless))


EMPTY = KeySet()


def _b64(text: str) -> bytes:
    """Base64 or base64url, padding optional (APIM's keys come either way)."""
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)


def _b64url(text: str) -> str:
    """The same bytes as unpadded base64url, what a JWK's ``n`` and ``e`` must be."""
    return base64.urlsafe_b64encode(_b64(text)).rstrip(b"=").decode("ascii")


def step_keys(keys: Iterable[JwtKey]) -> tuple[KeySet, tuple[str, ...]]:
    """
    A step's ``issuer-signing-keys`` as a :class:`KeySet`, and a reason for
    each key that could not be used (bad base64, an RSA key that does not
    load). The compiler checked the shape; the key material is checked
    here, once per step object.
    """
    pairs: list[tuple[str | None, Key]] = []
    problems: list[str] = []
    for index, item in enumerate(keys, 1):
        name = f"key {index}" + (f" (id {item.id})" if item.id else "")
        try:
            key: Key
            if item.n is not None and item.e is not None:
                key = RSAKey.import_key({"kty": "RSA", "n": _b64url(item.n), "e": _b64url(item.e)})
            elif item.value is not None:
                secret = _b64(item.value)
                if not secret:
                    raise ValueError("empty key")
                with warnings.catch_warnings():
                    # Short HMAC keys are the configuration's choice (APIM takes them too).
                    warnings.simplefilter("ignore")
                    key = OctKey.import_key(secret)
            else:
                problems.append(f"{name}: certificate keys are not supported")
                continue
        except (binascii.Error, ValueError, JoseError, TypeError) as error:
            problems.append(f"{name}: {error or type(error).__name__}")
            continue
        pairs.append((item.id, key))
    return KeySet.of(pairs), tuple(problems)


def jwks_keys(document: object) -> KeySet:
    """
    The signature keys of a JWKS document (RFC 7517). Keys for encryption
    (``use: enc``) and of unsupported types are left out; a document with no
    usable key at all is :class:`MalformedDocument`, so the caller keeps
    the keys it had.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise MalformedDocument("the JWKS is not a JSON object with a \"keys\" list")
    pairs: list[tuple[str | None, Key]] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in KEY_TYPES:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError, KeyError, binascii.Error):
            continue
        pairs.append((kid if isinstance(kid, str) else None, key))
    if not pairs:
        raise MalformedDocument("the JWKS holds no usable signature key")
    return KeySet.of(pairs)
