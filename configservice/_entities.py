"""
The entities of the configuration service: validation of what the
management API receives, and the two views of what is stored (the
management view, the gateway view).

Pure: no database, no Twisted. Field names follow the APIM REST API, so an
APIM user's JSON carries over. Unknown fields are refused (400 naming the
field) rather than ignored: a misspelt ``subscriptonRequired`` silently
ignored is an open API. ``id``, ``name``, ``revision`` and ``modified`` are
accepted and ignored, so a GET → edit → PUT round trip works.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree
from typing import Any, Iterable
from urllib.parse import urlsplit

from cloudproto import DEFAULT_KEY_NAMES, ENTITY_LISTS, KEY_NAME_PARTS, key_name_error

from ._errors import ApiError

__all__ = [
    "DELIVERED",
    "KINDS",
    "check_hostname",
    "check_id",
    "gateway_view",
    "management_view",
    "operation_view",
    "validate",
]

#: What the store holds, by kind. ``operation`` is not a kind of its own:
#: operations live inside their API (they are delivered with it).
KINDS = (
    "api",
    "product",
    "subscription",
    "policy",
    "namedValue",
    "certificate",
    "gateway",
    "gatewayApi",
    "hostname",
)

#: The kinds a gateway receives, and the key of each in its snapshot
#: (the wire protocol's, shared with the gateway).
DELIVERED = ENTITY_LISTS

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,79}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$")
_METHOD = re.compile(r"^[A-Z][A-Z0-9!#$%&'*+.^_`|~-]*$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_IGNORED = frozenset({"id", "name", "revision", "modified"})
_SUBSCRIPTION_STATES = ("active", "suspended", "submitted", "rejected", "cancelled", "expired")
_PRODUCT_STATES = ("published", "notPublished")
_MAX_TEXT = 256


def check_id(value: str, field: str) -> str:
    """An entity id from a path: 1–80 of letters, digits, ``.``, ``_``, ``~``, ``-``."""
    if not _ID.match(value):
        raise ApiError.invalid(
            field,
            "must be 1-80 letters, digits, '.', '_', '~' or '-', starting with a letter or digit",
        )
    return value


def check_hostname(value: str, field: str) -> str:
    """A DNS host name, or ``*.`` and one, lower-cased (host names are case-insensitive)."""
    name = value.strip().lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if len(name) > 253 or not labels or not all(_LABEL.match(label) for label in labels):
        raise ApiError.invalid(field, f"{value!r} is not a host name (or *.host name)")
    return name


class _Body:
    """Typed access to one JSON object, raising 400s that name the field."""

    def __init__(self, body: Any, allowed: Iterable[str], prefix: str = "") -> None:
        if not isinstance(body, dict):
            raise ApiError.invalid(prefix.rstrip(".") or "body", "must be a JSON object")
        self._body = body
        self._prefix = prefix
        for key in body:
            if key not in allowed and key not in _IGNORED:
                raise ApiError.invalid(prefix + key, "unknown field")

    def name(self, key: str) -> str:
        return self._prefix + key

    def has(self, key: str) -> bool:
        return self._body.get(key) is not None

    def string(
        self, key: str, default: str | None = None, *, max_length: int = _MAX_TEXT,
        allow_empty: bool = True,
    ) -> str:
        value = self._body.get(key)
        if value is None:
            if default is None:
                raise ApiError.invalid(self.name(key), "is required")
            return default
        if not isinstance(value, str):
            raise ApiError.invalid(self.name(key), "must be a string")
        if len(value) > max_length:
            raise ApiError.invalid(self.name(key), f"must be at most {max_length} characters")
        if not allow_empty and not value.strip():
            raise ApiError.invalid(self.name(key), "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._body.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ApiError.invalid(self.name(key), "must be true or false")
        return value

    def strings(self, key: str, default: list[str]) -> list[str]:
        value = self._body.get(key)
        if value is None:
            return list(default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError.invalid(self.name(key), "must be a list of strings")
        return list(value)

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        value = self.string(key, default)
        options = tuple(choices)
        for option in options:
            if value.lower() == option.lower():
                return option
        raise ApiError.invalid(self.name(key), f"must be one of {', '.join(options)}")


def _key_names(body: dict[str, Any]) -> dict[str, str]:
    """
    An API's ``subscriptionKeyParameterNames`` (APIM's ``{header, query}``):
    where a request carries its subscription key. A name not given is
    APIM's default, so what is stored (and answered) is always both. The
    rules for a name are the wire protocol's (:func:`cloudproto.key_name_error`),
    which the gateway applies too.
    """
    raw = body.get("subscriptionKeyParameterNames")
    if raw is None:
        return dict(DEFAULT_KEY_NAMES)
    b = _Body(raw, KEY_NAME_PARTS, prefix="subscriptionKeyParameterNames.")
    names: dict[str, str] = {}
    for key in KEY_NAME_PARTS:
        value = b.string(key, DEFAULT_KEY_NAMES[key])
        error = key_name_error(key, value)
        if error is not None:
            raise ApiError.invalid(b.name(key), error)
        names[key] = value
    return names


def _api(body: Any) -> dict[str, Any]:
    b = _Body(body, ("path", "serviceUrl", "displayName", "protocols", "subscriptionRequired",
                     "subscriptionKeyParameterNames", "hostnames", "description"))
    path = b.string("path", max_length=400).strip().strip("/")
    if path and not all(_SEGMENT.match(s) for s in path.split("/")):
        raise ApiError.invalid(
            "path", "must be URL path segments (no empty segment, space, ?, # or {})"
        )
    service_url = b.string("serviceUrl", max_length=2000, allow_empty=False).strip()
    parts = urlsplit(service_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError.invalid("serviceUrl", "must be an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ApiError.invalid("serviceUrl", "must not have a query or fragment")
    protocols = [p.lower() for p in b.strings("protocols", ["http", "https"])]
    if not protocols or any(p not in ("http", "https") for p in protocols):
        raise ApiError.invalid("protocols", "must be a non-empty list of http and https")
    hostnames: list[str] = []
    for i, host in enumerate(b.strings("hostnames", [])):
        name = check_hostname(host, f"hostnames[{i}]")
        if name not in hostnames:
            hostnames.append(name)
    return {
        "path": path,
        "serviceUrl": service_url,
        "displayName": b.string("displayName", ""),
        "description": b.string("description", "", max_length=4000),
        "protocols": sorted(set(protocols)),
        "subscriptionRequired": b.boolean("subscriptionRequired", False),
        "subscriptionKeyParameterNames": _key_names(body),
        "hostnames": sorted(hostnames),
    }


def _operation(body: Any) -> dict[str, Any]:
    b = _Body(body, ("method", "urlTemplate", "displayName", "description"))
    method = b.string("method", allow_empty=False).strip().upper()
    if method != "*" and not _METHOD.match(method):
        raise ApiError.invalid("method", "must be an HTTP method (GET, POST, ...) or *")
    template = b.string("urlTemplate", max_length=1000).strip()
    if not template.startswith("/"):
        raise ApiError.invalid("urlTemplate", "must start with /")
    if "?" in template or "#" in template:
        raise ApiError.invalid("urlTemplate", "query and fragment templates are not supported")
    names: set[str] = set()
    for segment in template.split("/")[1:]:
        if "{" in segment or "}" in segment:
            if not (segment.startswith("{") and segment.endswith("}")) or not _PARAM.match(
                segment[1:-1]
            ):
                raise ApiError.invalid(
                    "urlTemplate", f"segment {segment!r}: a parameter is a whole segment {{name}}"
                )
            if segment[1:-1] in names:
                raise ApiError.invalid("urlTemplate", f"parameter {segment} appears twice")
            names.add(segment[1:-1])
    return {
        "method": method,
        "urlTemplate": template,
        "displayName": b.string("displayName", ""),
        "description": b.string("description", "", max_length=4000),
    }


def _policy(body: Any) -> dict[str, Any]:
    b = _Body(body, ("format", "value"))
    b.choice("format", ("xml",), "xml")
    value = b.string("value", max_length=256 * 1024, allow_empty=False)
    try:
        root = ElementTree.fromstring(value)
    except ElementTree.ParseError as e:
        raise ApiError.invalid("value", f"is not well-formed XML ({e})") from None
    if root.tag != "policies":
        raise ApiError.invalid("value", f"the root element must be <policies>, not <{root.tag}>")
    return {"format": "xml", "value": value}


def _product(body: Any) -> dict[str, Any]:
    b = _Body(body, ("displayName", "description", "subscriptionRequired", "state"))
    return {
        "displayName": b.string("displayName", ""),
        "description": b.string("description", "", max_length=4000),
        "subscriptionRequired": b.boolean("subscriptionRequired", True),
        "state": b.choice("state", _PRODUCT_STATES, "published"),
    }


def _subscription(body: Any) -> dict[str, Any]:
    b = _Body(body, ("scope", "displayName", "primaryKey", "secondaryKey", "state"))
    scope = b.string("scope", allow_empty=False).strip().rstrip("/")
    parts = scope.split("/")
    if scope == "/apis":
        pass
    elif len(parts) == 3 and not parts[0] and parts[1] in ("apis", "products") and _ID.match(
        parts[2]
    ):
        pass
    else:
        raise ApiError.invalid("scope", "must be /apis, /apis/{apiId} or /products/{productId}")
    fields: dict[str, Any] = {
        "scope": scope,
        "displayName": b.string("displayName", ""),
        "state": b.choice("state", _SUBSCRIPTION_STATES, "active"),
    }
    for key in ("primaryKey", "secondaryKey"):
        if b.has(key):
            value = b.string(key)
            if not 8 <= len(value) <= 256 or any(c.isspace() for c in value):
                raise ApiError.invalid(key, "must be 8-256 characters without spaces")
            fields[key] = value
    return fields


def _named_value(body: Any) -> dict[str, Any]:
    b = _Body(body, ("value", "secret", "displayName", "tags"))
    tags = b.strings("tags", [])
    return {
        "value": b.string("value", max_length=4096),
        "secret": b.boolean("secret", False),
        "displayName": b.string("displayName", ""),
        "tags": sorted(set(tags)),
    }


def _certificate(body: Any) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    b = _Body(body, ("pem", "key"))
    pem = b.string("pem", max_length=256 * 1024, allow_empty=False)
    try:
        chain = x509.load_pem_x509_certificates(pem.encode("utf-8"))
    except ValueError:
        raise ApiError.invalid("pem", "holds no PEM certificate") from None
    key_text = b.string("key", "", max_length=64 * 1024) or pem
    field = "key" if b.has("key") else "pem"
    match = re.search(
        r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", key_text, re.S
    )
    if match is None:
        raise ApiError.invalid(field, "holds no PEM private key (give it in pem or in key)")
    try:
        key = serialization.load_pem_private_key(match.group(0).encode("ascii"), password=None)
    except TypeError:
        raise ApiError.invalid(field, "the private key is encrypted; give it unencrypted") from None
    except ValueError:
        raise ApiError.invalid(field, "the private key cannot be read") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    leaf = chain[0]
    public = key.public_key()  # type: ignore[union-attr]
    if leaf.public_key().public_bytes(*spki) != public.public_bytes(*spki):
        raise ApiError.invalid(field, "the private key does not match the (first) certificate")
    return {
        "pem": "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        "subject": leaf.subject.rfc4514_string(),
        "thumbprint": leaf.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 (APIM's name)
        "sha256": hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "expirationDate": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _gateway(body: Any) -> dict[str, Any]:
    b = _Body(body, ("description", "locationData"))
    location: dict[str, str] = {}
    raw = body.get("locationData") if isinstance(body, dict) else None
    if raw is not None:
        lb = _Body(raw, ("name", "city", "district", "countryOrRegion"), prefix="locationData.")
        for key in ("name", "city", "district", "countryOrRegion"):
            if lb.has(key):
                location[key] = lb.string(key)
    return {"description": b.string("description", "", max_length=4000), "locationData": location}


def _hostname(body: Any) -> dict[str, Any]:
    b = _Body(body, ("certificateId", "negotiateClientCertificate"))
    return {
        "certificateId": check_id(b.string("certificateId"), "certificateId"),
        "negotiateClientCertificate": b.boolean("negotiateClientCertificate", False),
    }


def _empty(body: Any) -> dict[str, Any]:
    _Body({} if body is None else body, ())
    return {}


_VALIDATORS = {
    "api": _api,
    "operation": _operation,
    "policy": _policy,
    "product": _product,
    "subscription": _subscription,
    "namedValue": _named_value,
    "certificate": _certificate,
    "gateway": _gateway,
    "hostname": _hostname,
    "gatewayApi": _empty,
}


def validate(kind: str, body: Any) -> dict[str, Any]:
    """
    The fields to store for a PUT of ``kind`` with the JSON ``body``.

    :raises ApiError: 400 naming the first wrong field.
    """
    return _VALIDATORS[kind](body)


def _stamp(view: dict[str, Any], revision: int, modified: str) -> dict[str, Any]:
    view["revision"] = revision
    view["modified"] = modified
    return view


def management_view(
    kind: str, entity_id: str, body: dict[str, Any], revision: int, modified: str
) -> dict[str, Any]:
    """
    What the management API returns. Certificates without their key,
    secret named values without their value, APIs without operations
    (those are sub-resources: ``/apis/{apiId}/operations``).
    """
    view: dict[str, Any] = {"id": entity_id}
    if kind == "api":
        view["name"] = entity_id
        view.update({k: v for k, v in body.items() if k != "operations"})
    elif kind == "certificate":
        view.update({k: v for k, v in body.items() if k != "key"})
        view["hasPrivateKey"] = True
    elif kind == "namedValue" and body.get("secret"):
        view.update({k: v for k, v in body.items() if k != "value"})
    elif kind in ("gatewayApi", "hostname"):
        view = dict(body)
    else:
        view.update(body)
    return _stamp(view, revision, modified)


def gateway_view(
    kind: str, entity_id: str, body: dict[str, Any], revision: int, modified: str
) -> dict[str, Any]:
    """
    What a gateway receives: everything it needs to serve, including
    certificate keys, subscription keys and secret values. APIs carry their
    operations, as a list sorted by id.
    """
    view: dict[str, Any] = {"id": entity_id}
    if kind == "api":
        view["name"] = entity_id
        view.update({k: v for k, v in body.items() if k != "operations"})
        view["operations"] = [
            {"id": op_id, "name": op_id, **fields}
            for op_id, fields in sorted(body.get("operations", {}).items())
        ]
    else:
        view.update(body)
    return _stamp(view, revision, modified)


def operation_view(api_id: str, op_id: str, fields: dict[str, Any], revision: int,
                   modified: str) -> dict[str, Any]:
    """An operation as the management API returns it (it shares its API's revision)."""
    return _stamp({"id": op_id, "name": op_id, "apiId": api_id, **fields}, revision, modified)
