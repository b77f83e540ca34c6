"""
Real parts for the ``validate-jwt`` tests: keys generated here with
cryptography, tokens signed with joserfc, and a loopback identity provider
(twisted.web on 127.0.0.1, port 0) that serves a discovery document and a
JWKS and counts every hit.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, RSAKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.translate.policy import JwtKey

NOW = 1_800_000_000.0
ISSUER = "https://issuer.example"
AUDIENCE = "api://apimgw"


def _pem(private: Any) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def rsa_key() -> RSAKey:
    """A fresh 2048-bit RSA key (made with cryptography, loaded by joserfc)."""
    return RSAKey.import_key(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))


def ec_key() -> ECKey:
    """A fresh P-256 key."""
    return ECKey.import_key(_pem(ec.generate_private_key(ec.SECP256R1())))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rsa_n_e(key: RSAKey) -> JwtKey:
    """The key as APIM's ``<key n="..." e="..."/>``."""
    numbers = key.public_key.public_numbers()  # type: ignore[union-attr]
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return JwtKey(n=b64url(n), e=b64url(e))


def symmetric(secret: bytes, kid: str | None = None) -> tuple[JwtKey, OctKey]:
    """An HMAC secret as APIM's base64 ``<key>`` text, and the joserfc key to sign with."""
    return JwtKey(value=base64.b64encode(secret).decode("ascii"), id=kid), OctKey.import_key(secret)


def claims(**extra: object) -> dict[str, object]:
    """Claims valid at :data:`NOW` for an hour, with issuer and audience."""
    base: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
                               "nbf": int(NOW) - 60, "exp": int(NOW) + 3600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Key, alg: str, kid: str | None = None, **extra: object) -> str:
    """A compact JWT with :func:`claims` (``None`` removes a claim)."""
    header: dict[str, object] = {"alg": alg}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, claims(**extra), key, algorithms=[alg])


def unsigned(**extra: object) -> str:
    """An ``alg: none`` token (header, payload, empty signature)."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims(**extra)).encode())
    return f"{header}.{payload}."


def jwk(key: Key, kid: str, alg: str) -> dict[str, object]:
    """The public half of ``key`` as a JWKS entry."""
    entry = dict(key.as_dict(private=False))
    entry.update({"kid": kid, "use": "sig", "alg": alg})
    return entry


class IdentityProvider(Resource):
    """
    ``/.well-known/openid-configuration`` and ``/jwks`` on loopback.

    :ivar keys: the JWKS entries served.
    :ivar mode: ``ok``; ``error`` (500 on the JWKS); ``garbage`` (a JWKS
        that is not JSON); ``empty`` (a JWKS without keys); ``hang`` (the
        JWKS request is never answered; :attr:`hanging` fires when one
        arrives).
    :ivar hits: path → number of requests.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[dict[str, object]] = []
        self.mode = "ok"
        self.hits: dict[str, int] = {}
        self.port: IListeningPort | None = None
        self.hanging: Deferred[Request] = Deferred()
        self.pending: list[Request] = []

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}/.well-known/openid-configuration"

    def jwks_hits(self) -> int:
        return self.hits.get("/jwks", 0)

    def render_GET(self, request: Request) -> bytes | int:
        path = request.path.decode()
        self.hits[path] = self.hits.get(path, 0) + 1
        request.setHeader(b"content-type", b"application/json")
        if path == "/.well-known/openid-configuration":
            base = f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[union-attr]
            return json.dumps({"issuer": ISSUER, "jwks_uri": base + "/jwks"}).encode()
        if path != "/jwks":
            request.setResponseCode(404)
            return b"{}"
        if self.mode == "error":
            request.setResponseCode(500)
            return b"{}"
        if self.mode == "garbage":
            return b"<html>not json</html>"
        if self.mode == "empty":
            return b'{"keys": []}'
        if self.mode == "hang":
            self.pending.append(request)
            self.hanging.callback(request)
            return NOT_DONE_YET
        return json.dumps({"keys": self.keys}).encode()

    def start(self) -> None:
        site = Site(self)
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]

    def stop(self) -> Deferred[None]:
        if self.port is None or not self.port.connected:  # type: ignore[attr-defined]
            return succeed(None)
        for request in self.pending:
            if not request.finished and request.channel is not None:
                request.channel.transport.abortConnection()  # type: ignore[union-attr]
        return self.port.stopListening()  # type: ignore[return-value]
