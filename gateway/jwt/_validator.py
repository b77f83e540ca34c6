"""
The request-time check of a ``validate-jwt`` step: synchronous, no I/O.

The signature is verified with the step's ``issuer-signing-keys`` (parsed
once per step object) and the keys :class:`~gateway.jwt.OpenIdKeys` holds
for the step's ``openid-config`` URLs; then the claims are checked
(:mod:`._claims`). A token whose ``kid`` no key has is refused at once,
and the cache is asked to refresh those URLs in the background, so a
rotated key is picked up without blocking a request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry, extract_compact, verify_compact
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.translate.policy import PolicyContext, ValidateJwt

from . import _messages as msg
from ._claims import ClaimRules, check_claims
from ._keys import KeySet, step_keys

__all__ = ["SUPPORTED_ALGORITHMS", "KeySource", "TokenValidator"]

#: The algorithms a token may be signed with (APIM's list, minus
#: encrypted tokens): RSA PKCS#1 and PSS, ECDSA, HMAC.
SUPPORTED_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512",
})

# Our own registry: the supported algorithms only, and unknown header
# parameters allowed (identity providers add their own, e.g. ``x5t``).
_REGISTRY = JWSRegistry(algorithms=sorted(SUPPORTED_ALGORITHMS), strict_check_header=False)
# joserfc's defaults (512-byte header, 1024-byte signature) would refuse
# tokens whose header carries an ``x5c`` chain or that are signed with an
# 8192-bit RSA key; these limits still bound the work a token can cause.
_REGISTRY.max_header_length = 8192
_REGISTRY.max_signature_length = 2048
_ALGORITHMS = {name: JWSRegistry.algorithms[name] for name in SUPPORTED_ALGORITHMS}


class KeySource(Protocol):
    """Where the keys of ``openid-config`` URLs come from (:class:`~gateway.jwt.OpenIdKeys`)."""

    def keys(self, url: str) -> KeySet | None:
        """The URL's last good keys, ``None`` before the first successful fetch."""

    def unknown_kid(self, url: str) -> None:
        """A token named a ``kid`` none of the URL's keys has: refresh soon, in the background."""


@dataclass(frozen=True, slots=True)
class _Verified:
    """
    A token whose signature verified, for the step and with the key sets
    (by identity: a refresh makes new ones) it verified against.
    """

    step: ValidateJwt
    sets: tuple[KeySet, ...]
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a step needs beyond its fields, computed once per step object."""

    keys: KeySet
    urls: tuple[str, ...]
    rules: ClaimRules


class TokenValidator:
    """
    Validates tokens for the policy executor (its ``JwtValidator``).

    :param openid: the cache of the ``openid-config`` keys.
    :param clock: the time a token's ``exp`` and ``nbf`` are compared with.
    """

    _log = Logger()
    _LIMIT = 65536
    #: Verified tokens kept: clients reuse a bearer token for many
    #: requests, and the signature check is most of a validation's cost
    #: (RS256 ~25 µs, ES256 ~70 µs here). Only tokens that verified enter.
    _VERIFIED_LIMIT = 4096

    def __init__(self, openid: KeySource, clock: IReactorTime) -> None:
        self._openid = openid
        self._clock = clock
        self._prepared: dict[int, tuple[ValidateJwt, _Prepared]] = {}
        self._verified: dict[str, _Verified] = {}

    def _prepare(self, step: ValidateJwt) -> _Prepared:
        """
        The step's keys and claim rules, cached by the step's identity (the
        step kept alive with it): pipelines are built once per
        configuration, so this parses each step's keys once per generation.
        """
        entry = self._prepared.get(id(step))
        if entry is not None and entry[0] is step:
            return entry[1]
        keys, problems = step_keys(step.issuer_signing_keys)
        for problem in problems:
            self._log.warn("validate-jwt: an issuer signing key is left out: {problem}",
                           problem=problem)
        prepared = _Prepared(keys, step.openid_config_urls, ClaimRules.of(step))
        if len(self._prepared) >= self._LIMIT:
            self._prepared.clear()
        self._prepared[id(step)] = (step, prepared)
        return prepared

    def validate(self, token: str, step: ValidateJwt,
                 request: PolicyContext) -> Mapping[str, object] | str:
        """The token's claims, or the message saying why it is refused."""
        prepared = self._prepare(step)
        sets = self._key_sets(prepared)
        verified = self._verified.get(token)
        if (verified is not None and verified.step is step
                and len(verified.sets) == len(sets)
                and all(a is b for a, b in zip(verified.sets, sets, strict=True))):
            # The same token, checked for the same step with the same key
            # sets: its signature still holds; only the time-dependent and
            # request-dependent claim checks run again.
            failure = check_claims(verified.claims, prepared.rules, self._clock.seconds(), request)
            return verified.claims if failure is None else failure
        try:
            obj = extract_compact(token.encode("ascii"), registry=_REGISTRY)
            header: dict[str, Any] = obj.protected
            _REGISTRY.check_header(header)
        except UnicodeEncodeError:
            return msg.malformed("not ASCII")
        except (JoseError, ValueError, TypeError) as error:
            return msg.malformed(_reason(error))
        alg = header.get("alg")
        if alg == "none":
            if step.require_signed_tokens:
                return msg.unsigned()
            if obj.segments["signature"]:
                return msg.malformed("an unsigned token carries a signature")
        elif alg not in _ALGORITHMS:
            return msg.algorithm_not_supported(alg)
        else:
            failure = self._verify(obj, alg, header.get("kid"), prepared, sets)
            if failure is not None:
                return failure
        try:
            claims = json.loads(obj.payload)
        except (ValueError, UnicodeDecodeError):
            return msg.malformed("the payload is not JSON")
        if not isinstance(claims, dict):
            return msg.malformed("the payload is not a JSON object")
        if alg != "none":
            if len(self._verified) >= self._VERIFIED_LIMIT:
                self._verified.clear()
            self._verified[token] = _Verified(step, sets, claims)
        failure = check_claims(claims, prepared.rules, self._clock.seconds(), request)
        if failure is not None:
            return failure
        return claims

    def _key_sets(self, prepared: _Prepared) -> tuple[KeySet, ...]:
        """The step's own keys, then the fetched keys of its URLs (those fetched yet)."""
        if not prepared.urls:
            return (prepared.keys,)
        sets = [prepared.keys]
        for url in prepared.urls:
            keys = self._openid.keys(url)
            if keys is not None:
                sets.append(keys)
        return tuple(sets)

    def _verify(
        self, obj: Any, alg: str, kid: object, prepared: _Prepared, sets: tuple[KeySet, ...]
    ) -> str | None:
        """``None`` when a key verifies the signature, else the message."""
        fetched_any = len(sets) > 1
        candidates: list[Key] = []
        if isinstance(kid, str):
            for keys in sets:
                candidates.extend(keys.by_kid.get(kid, ()))
            matched = bool(candidates)
            for keys in sets:
                candidates.extend(keys.kidless)
        else:
            matched = True
            for keys in sets:
                candidates.extend(keys.keys)
        if not candidates:
            if prepared.urls and not fetched_any and not prepared.keys.keys:
                return msg.keys_not_fetched()
            if not matched:
                self._refresh(prepared)
                return msg.unknown_kid(kid)
            return msg.no_keys()
        model = _ALGORITHMS[alg]
        tried = 0
        for key in candidates:
            try:
                model.check_key(key)
            except (JoseError, ValueError):
                continue
            tried += 1
            try:
                if verify_compact(obj, model, key):
                    return None
            except (JoseError, ValueError, TypeError):
                continue
        if not matched:
            self._refresh(prepared)
            return msg.unknown_kid(kid)
        return msg.signature_invalid(tried, kid if isinstance(kid, str) else None)


    def _refresh(self, prepared: _Prepared) -> None:
        """
        A ``kid`` no key has and no key without a ``kid`` verified: the
        provider may have rotated its keys, so ask for a background
        refresh (the cache coalesces and rate-limits these).
        """
        for url in prepared.urls:
            self._openid.unknown_kid(url)


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 80 else text[:77] + "..."
