"""
The local configuration file format: YAML text in, model objects out.

Parsing works on the composed YAML node tree rather than on plain Python
values, because every node carries its position: an operator who mistypes a
field is told the line, not just "invalid configuration".

Only the *structure* is checked here (types, required fields, unknown keys,
duplicate names, readable certificate files), and an API's subscription key
names, by the rules the configuration service applies too
(:func:`cloudproto.key_name_error`). Whether a URL, host or path makes
sense is for translation, which reports it per object and serves the rest;
rejecting it here would reject the whole file for one bad route.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cloudproto import KEY_NAME_PARTS, key_name_error
from gateway.model import (
    POLICY_FORMATS,
    POLICY_SCOPES,
    PRODUCT_STATES,
    SUBSCRIPTION_STATES,
    Api,
    Certificate,
    NamedValue,
    ObjectRef,
    Operation,
    Policy,
    PolicyScope,
    Product,
    Route,
    RouteSet,
    SourceObject,
    Subscription,
    SubscriptionKeyNames,
    SubscriptionScope,
    kind_of,
)

__all__ = ["ConfigFileError", "parse_config"]

_T = TypeVar("_T")

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

#: How a node's resolved tag is named in an error message.
_TAG_NAMES = {
    _STR: "a string",
    _BOOL: "a boolean",
    _NULL: "empty",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a timestamp",
    "tag:yaml.org,2002:binary": "binary data",
    "tag:yaml.org,2002:seq": "a list",
    "tag:yaml.org,2002:map": "a mapping",
}

_TOP_KEYS = (
    "apis",
    "routes",
    "certificates",
    "defaultCertificate",
    "products",
    "subscriptions",
    "namedValues",
    "policies",
)
_API_KEYS = (
    "name",
    "displayName",
    "path",
    "serviceUrl",
    "hostnames",
    "subscriptionRequired",
    "operations",
    "protocols",
    "subscriptionKeyParameterNames",
)
_OPERATION_KEYS = ("name", "method", "urlTemplate")
_ROUTE_KEYS = ("host", "path", "pathType", "backend", "preserveHost", "httpsRedirect")
_CERTIFICATE_KEYS = ("name", "hosts", "certFile", "cert", "keyFile", "key")
_PRODUCT_KEYS = ("name", "displayName", "apis", "subscriptionRequired", "state")
_SUBSCRIPTION_KEYS = ("name", "displayName", "scope", "primaryKey", "secondaryKey", "state")
_NAMED_VALUE_KEYS = ("name", "displayName", "value", "secret", "tags")
_POLICY_KEYS = ("scope", "productId", "apiId", "operationId", "format", "xml", "xmlFile")
#: The target ids each policy scope needs (and the only ones it accepts).
_POLICY_TARGETS = {
    "global": (),
    "product": ("productId",),
    "api": ("apiId",),
    "operation": ("apiId", "operationId"),
}

#: Only its merge-key flattening is used; it holds no per-document state.
_CONSTRUCTOR = SafeConstructor()


class ConfigFileError(ValueError):
    """
    The configuration file cannot be used as a whole: it is not YAML, or its
    structure does not match the format.

    :ivar message: what is wrong, starting with where in the document
        (``apis[0].operations[1]: 'method' is required``).
    :ivar path: the file, as the operator named it, for the message.
    :ivar line: 1-based line of the offending node, ``None`` when unknown
        (the file could not be read at all).
    """

    def __init__(self, message: str, *, path: str = "<config>", line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class _Invalid(Exception):
    """
    A structural error found while walking the node tree; becomes a
    :class:`ConfigFileError` once the file's path is known.
    """

    def __init__(self, where: str, message: str, line: int | None):
        super().__init__(f"{where}: {message}" if where else message)
        self.line = line

    @classmethod
    def at(cls, node: Node, where: str, message: str) -> _Invalid:
        """An error about ``node``, reported on the line where it starts."""
        return cls(where, message, node.start_mark.line + 1)


def _describe(node: Node) -> str:
    return _TAG_NAMES.get(node.tag, node.tag)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass
class _Mapping:
    """
    One YAML mapping being read: where it is in the document, its node (for
    the line of a missing field), and its keys with their value nodes.
    """

    where: str
    node: MappingNode
    values: dict[str, Node]

    def get(self, key: str) -> Node | None:
        """The value node of ``key``; an explicitly empty value counts as absent."""
        value = self.values.get(key)
        if value is None or value.tag == _NULL:
            return None
        return value

    def require(self, key: str) -> Node:
        """The value node of ``key``, which must be present and not empty."""
        value = self.get(key)
        if value is None:
            raise _Invalid.at(self.node, self.where, f"{key!r} is required")
        return value

    def string(self, key: str) -> str:
        """A required string field."""
        return _string(self.require(key), _join(self.where, key))

    def optional_string(self, key: str) -> str | None:
        """A string field that may be absent (``None``)."""
        node = self.get(key)
        return None if node is None else _string(node, _join(self.where, key))

    def name(self) -> str:
        """The required, non-blank ``name`` that identifies the entry."""
        name = self.string("name")
        if not name.strip():
            raise _Invalid.at(self.values["name"], _join(self.where, "name"), "must not be blank")
        return name

    def boolean(self, key: str, default: bool) -> bool:
        """A ``true``/``false`` field."""
        node = self.get(key)
        if node is None:
            return default
        if node.tag != _BOOL:
            where = _join(self.where, key)
            raise _Invalid.at(node, where, f"must be true or false, not {_describe(node)}")
        return SafeConstructor.bool_values[node.value.lower()]

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """
        A string field that must be one of ``choices``, matched without
        regard to case (as APIM does), given back in the canonical spelling.
        """
        node = self.get(key)
        if node is None:
            return default
        value = _string(node, _join(self.where, key))
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        message = f"must be one of {', '.join(choices)}, not {value!r}"
        raise _Invalid.at(node, _join(self.where, key), message)

    def items(self, key: str, read: Callable[[Node, str], _T]) -> list[_T]:
        """A list field, each item read by ``read(node, where)``; absent: empty."""
        return [value for value, _, _ in self._items(key, read)]

    def unique_items(
        self, key: str, read: Callable[[Node, str], _T], name_of: Callable[[_T], str], what: str
    ) -> list[_T]:
        """
        A list field whose items must have distinct names, because the name
        is what identifies the object (its :class:`ObjectRef`).
        """
        seen: set[str] = set()
        values = []
        for value, node, where in self._items(key, read):
            name = name_of(value)
            if name in seen:
                raise _Invalid.at(node, where, f"duplicate {what} {name!r}")
            seen.add(name)
            values.append(value)
        return values

    def _items(self, key: str, read: Callable[[Node, str], _T]) -> list[tuple[_T, Node, str]]:
        node = self.get(key)
        if node is None:
            return []
        where = _join(self.where, key)
        if not isinstance(node, SequenceNode):
            raise _Invalid.at(node, where, f"must be a list, not {_describe(node)}")
        return [
            (read(item, f"{where}[{i}]"), item, f"{where}[{i}]")
            for i, item in enumerate(node.value)
        ]


def _string(node: Node, where: str) -> str:
    # Numbers and booleans are refused rather than converted: "path: 1.10"
    # would otherwise silently become "1.1", and "name: no" False.
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        raise _Invalid.at(node, where, f"must be a string, not {_describe(node)} (quote it)")
    return node.value


def _mapping(node: Node, where: str, keys: tuple[str, ...]) -> _Mapping:
    """
    Read a mapping whose keys must be among ``keys``.

    Unknown keys are errors, not warnings: a misspelt optional field
    (``pathtype: Exact``) would otherwise be silently ignored and change
    what is served. YAML merge keys (``<<: *defaults``) are honoured; an own
    key overrides a merged one.
    """
    if not isinstance(node, MappingNode):
        raise _Invalid.at(node, where, f"must be a mapping, not {_describe(node)}")
    _check_repeated_keys(node, where)
    try:
        _CONSTRUCTOR.flatten_mapping(node)
    except yaml.MarkedYAMLError as e:
        raise _Invalid.at(node, where, str(e.problem)) from None
    values: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key = _key(key_node, where)
        if key not in keys:
            expected = ", ".join(keys)
            message = f"unknown key {key!r} (expected one of: {expected})"
            raise _Invalid.at(key_node, where, message)
        values[key] = value_node
    return _Mapping(where, node, values)


def _key(node: Node, where: str) -> str:
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        raise _Invalid.at(node, where, f"keys must be strings, not {_describe(node)}")
    return node.value


def _check_repeated_keys(node: MappingNode, where: str) -> None:
    # PyYAML lets a repeated key silently win; in a configuration that hides
    # a mistake, so it is refused. Checked before merging, since an own key
    # overriding a merged one is not a repetition.
    seen: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = _key(key_node, where)
        if key in seen:
            raise _Invalid.at(key_node, where, f"{key!r} is given twice")
        seen.add(key)


def _operation(node: Node, where: str) -> Operation:
    mapping = _mapping(node, where, _OPERATION_KEYS)
    method = mapping.string("method")
    template = mapping.string("urlTemplate")
    # An unnamed operation is named after what it matches, so a repeated
    # unnamed operation still shows up as a duplicate.
    name = mapping.name() if mapping.get("name") is not None else f"{method} {template}"
    return Operation(name=name, method=method, url_template=template)


def _api(node: Node, where: str) -> Api:
    mapping = _mapping(node, where, _API_KEYS)
    name = mapping.name()
    operations = mapping.unique_items(
        "operations", _operation, _operation_name, "operation name"
    )
    return Api(
        name=name,
        path=mapping.string("path"),
        service_url=mapping.string("serviceUrl"),
        hostnames=tuple(mapping.items("hostnames", _string)),
        subscription_required=mapping.boolean("subscriptionRequired", False),
        operations=tuple(operations),
        display_name=mapping.optional_string("displayName") or "",
        protocols=tuple(mapping.items("protocols", _string)) or ("http", "https"),
        subscription_key_parameter_names=_key_names(mapping),
    )


def _key_names(api: _Mapping) -> SubscriptionKeyNames:
    """
    An API's ``subscriptionKeyParameterNames``; an absent name keeps APIM's
    default. A name is checked by the rules the configuration service and
    the cloud decoder apply (:func:`cloudproto.key_name_error`): a header
    that is not an HTTP token, or a query name the gateway could not find
    as written in a query string, would never match a request.
    """
    node = api.get("subscriptionKeyParameterNames")
    if node is None:
        return SubscriptionKeyNames()
    mapping = _mapping(node, _join(api.where, "subscriptionKeyParameterNames"), KEY_NAME_PARTS)
    defaults = SubscriptionKeyNames()
    names = {}
    for key in KEY_NAME_PARTS:
        value = mapping.optional_string(key)
        if value is None:
            names[key] = getattr(defaults, key)
            continue
        if not value.strip():
            raise _Invalid.at(mapping.values[key], _join(mapping.where, key), "must not be blank")
        error = key_name_error(key, value)
        if error is not None:
            raise _Invalid.at(mapping.values[key], _join(mapping.where, key), error)
        names[key] = value
    return SubscriptionKeyNames(**names)


def _operation_name(operation: Operation) -> str:
    return operation.name


def _api_name(api: Api) -> str:
    return api.name


def _route(node: Node, where: str) -> Route:
    mapping = _mapping(node, where, _ROUTE_KEYS)
    return Route(
        path=mapping.string("path"),
        backend=mapping.string("backend"),
        host=mapping.optional_string("host"),
        path_type=mapping.optional_string("pathType") or "Prefix",
        preserve_host=mapping.boolean("preserveHost", False),
        https_redirect=mapping.boolean("httpsRedirect", False),
    )


@dataclass(frozen=True)
class _CertificateEntry:
    """A certificate as read, before ``defaultCertificate`` is known."""

    name: str
    hosts: tuple[str, ...]
    cert_pem: str
    key_pem: str


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _certificate_reader(
    base_dir: str | None, read_file: Callable[[str], str]
) -> Callable[[Node, str], _CertificateEntry]:
    def read(node: Node, where: str) -> _CertificateEntry:
        mapping = _mapping(node, where, _CERTIFICATE_KEYS)
        name = mapping.name()
        cert_pem = _pem(mapping, "cert", "certFile", base_dir, read_file)
        if cert_pem is None:
            raise _Invalid.at(node, where, "'cert' or 'certFile' is required")
        # With neither key nor keyFile, the key is expected in the same PEM as
        # the chain (a combined file, as the configuration service stores
        # it); translation reports it if it is not there.
        key_pem = _pem(mapping, "key", "keyFile", base_dir, read_file)
        return _CertificateEntry(
            name=name,
            hosts=tuple(mapping.items("hosts", _string)),
            cert_pem=cert_pem,
            key_pem=cert_pem if key_pem is None else key_pem,
        )

    return read


def _pem(
    mapping: _Mapping,
    inline: str,
    file_key: str,
    base_dir: str | None,
    read_file: Callable[[str], str],
) -> str | None:
    """The PEM text given inline under ``inline`` or read from ``file_key``."""
    if mapping.get(inline) is not None:
        if mapping.get(file_key) is not None:
            message = f"give either {inline!r} or {file_key!r}, not both"
            raise _Invalid.at(mapping.values[file_key], mapping.where, message)
        return mapping.string(inline)
    name = mapping.optional_string(file_key)
    if name is None:
        return None
    path = os.path.join(base_dir, name) if base_dir is not None else name
    try:
        return read_file(path)
    except (OSError, UnicodeDecodeError) as e:
        where = _join(mapping.where, file_key)
        raise _Invalid.at(mapping.values[file_key], where, f"cannot read {path!r}: {e}") from None


def _certificate_name(entry: _CertificateEntry) -> str:
    return entry.name


def _product(node: Node, where: str) -> Product:
    mapping = _mapping(node, where, _PRODUCT_KEYS)
    return Product(
        name=mapping.name(),
        display_name=mapping.optional_string("displayName") or "",
        api_ids=tuple(mapping.items("apis", _string)),
        subscription_required=mapping.boolean("subscriptionRequired", True),
        state=mapping.choice("state", PRODUCT_STATES, "published"),
    )


def _subscription(node: Node, where: str) -> Subscription:
    mapping = _mapping(node, where, _SUBSCRIPTION_KEYS)
    name = mapping.name()
    scope_node = mapping.require("scope")
    try:
        scope = SubscriptionScope.parse(_string(scope_node, _join(where, "scope")))
    except ValueError as e:
        raise _Invalid.at(scope_node, _join(where, "scope"), str(e)) from None
    keys = {}
    for key in ("primaryKey", "secondaryKey"):
        value = mapping.string(key) if key == "primaryKey" else mapping.optional_string(key)
        if value is not None and not value.strip():
            raise _Invalid.at(mapping.values[key], _join(where, key), "must not be blank")
        keys[key] = value
    return Subscription(
        name=name,
        scope=scope,
        primary_key=keys["primaryKey"] or "",
        secondary_key=keys["secondaryKey"],
        state=mapping.choice("state", SUBSCRIPTION_STATES, "active"),
        display_name=mapping.optional_string("displayName") or "",
    )


def _named_value(node: Node, where: str) -> NamedValue:
    mapping = _mapping(node, where, _NAMED_VALUE_KEYS)
    name = mapping.name()
    value = mapping.get("value")
    if value is None and "value" in mapping.values:
        # "value:" left empty is the empty string, not a missing field: an
        # empty named value is legal in APIM.
        text = ""
    else:
        text = mapping.string("value")
    return NamedValue(
        name=name,
        value=text,
        secret=mapping.boolean("secret", False),
        display_name=mapping.optional_string("displayName") or "",
        tags=tuple(mapping.items("tags", _string)),
    )


def _policy_reader(
    base_dir: str | None, read_file: Callable[[str], str]
) -> Callable[[Node, str], Policy]:
    def read(node: Node, where: str) -> Policy:
        mapping = _mapping(node, where, _POLICY_KEYS)
        mapping.require("scope")
        scope = mapping.choice("scope", POLICY_SCOPES, "global")
        targets = _POLICY_TARGETS[scope]
        ids: dict[str, str] = {}
        for key in ("productId", "apiId", "operationId"):
            value = mapping.optional_string(key)
            if value is None and key in targets:
                raise _Invalid.at(node, where, f"{key!r} is required at {scope} scope")
            if value is not None and key not in targets:
                message = f"does not apply at {scope} scope"
                raise _Invalid.at(mapping.values[key], _join(where, key), message)
            if value is not None and not value.strip():
                raise _Invalid.at(mapping.values[key], _join(where, key), "must not be blank")
            ids[key] = value or ""
        # The document is read like a certificate file: through read_file,
        # so the file source notices when it changes and reloads.
        xml = _pem(mapping, "xml", "xmlFile", base_dir, read_file)
        if xml is None:
            raise _Invalid.at(node, where, "'xml' or 'xmlFile' is required")
        return Policy(
            scope=PolicyScope(
                scope, product_id=ids["productId"], api_id=ids["apiId"],
                operation_id=ids["operationId"],
            ),
            xml=xml,
            format=mapping.choice("format", POLICY_FORMATS, "xml"),
        )

    return read


def _named(body: Product | Subscription | NamedValue) -> str:
    return body.name


def _policy_id(policy: Policy) -> str:
    return policy.scope.id


def _compose(text: str) -> Node | None:
    """The document's root node; ``None`` for an empty document."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        detail = str(e.problem or e.context)
        if e.context and e.problem and e.context_mark is not None:
            detail += f" ({e.context} started on line {e.context_mark.line + 1})"
        line = None if mark is None else mark.line + 1
        raise _Invalid("", f"invalid YAML: {detail}", line) from None
    except yaml.YAMLError as e:
        raise _Invalid("", f"invalid YAML: {e}", None) from None


def _objects(
    root: Node | None,
    source: str,
    modified: float,
    base_dir: str | None,
    read_file: Callable[[str], str],
) -> list[SourceObject]:
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        return []
    if not isinstance(root, MappingNode):
        message = f"the configuration must be a mapping, not {_describe(root)}"
        raise _Invalid.at(root, "", message)
    top = _mapping(root, "", _TOP_KEYS)
    apis = top.unique_items("apis", _api, _api_name, "API name")
    routes = top.items("routes", _route)
    certificates = top.unique_items(
        "certificates", _certificate_reader(base_dir, read_file), _certificate_name,
        "certificate name",
    )
    management: list[Product | Subscription | NamedValue] = [
        *top.unique_items("products", _product, _named, "product name"),
        *top.unique_items("subscriptions", _subscription, _named, "subscription name"),
        *top.unique_items("namedValues", _named_value, _named, "named value name"),
    ]
    policies = top.unique_items(
        "policies", _policy_reader(base_dir, read_file), _policy_id, "policy for scope"
    )
    default = top.optional_string("defaultCertificate")
    if default is not None and default not in {c.name for c in certificates}:
        node = top.values["defaultCertificate"]
        raise _Invalid.at(node, "defaultCertificate", f"names no certificate: {default!r}")

    objects = [SourceObject(ObjectRef(source, "api", api.name), modified, api) for api in apis]
    if routes:
        routeset = RouteSet(tuple(routes))
        objects.append(SourceObject(ObjectRef(source, "routes", "routes"), modified, routeset))
    for entry in certificates:
        certificate = Certificate(
            hosts=entry.hosts,
            cert_pem=entry.cert_pem,
            key_pem=entry.key_pem,
            is_default=entry.name == default,
        )
        ref = ObjectRef(source, "certificate", entry.name)
        objects.append(SourceObject(ref, modified, certificate))
    for body in management:
        ref = ObjectRef(source, kind_of(body), body.name)
        objects.append(SourceObject(ref, modified, body))
    for policy in policies:
        ref = ObjectRef(source, kind_of(policy), policy.scope.id)
        objects.append(SourceObject(ref, modified, policy))
    return objects


def parse_config(
    text: str,
    *,
    path: str = "<config>",
    modified: float,
    source: str = "file",
    base_dir: str | None = None,
    read_file: Callable[[str], str] | None = None,
) -> list[SourceObject]:
    """
    Parse a configuration file's text into the objects it declares.

    Each ``apis[]`` entry becomes one ``api`` object, the whole ``routes:``
    list one ``routes`` object named ``routes`` (the routes come and go
    together, like an Ingress's rules), and each ``certificates[]`` entry
    one ``certificate`` object. Each ``products[]``, ``subscriptions[]``
    and ``namedValues[]`` entry becomes one object of its kind named by its
    ``name``; each ``policies[]`` entry one ``policy`` object named by its
    scope (``global``, ``products/p``, ``apis/a``,
    ``apis/a/operations/o``), at most one per scope. An empty document is
    an empty configuration.

    :param path: the file name, used in error messages only.
    :param modified: the modification time every object gets (the file's
        mtime), which decides "last one wins" conflicts with other sources.
    :param source: the source name in the objects' refs.
    :param base_dir: the directory relative ``certFile``/``keyFile``/``xmlFile``
        names are read from (the configuration file's own); ``None``: the
        working directory.
    :param read_file: reads a certificate or policy (``xmlFile``) file's
        text (``OSError`` or ``UnicodeDecodeError`` when it cannot); the file
        source passes one that also notes each file's version, so that it
        re-reads the configuration when such a file changes.
    :raises ConfigFileError: the text is not YAML, or does not have the
        structure of a configuration file.
    """
    try:
        return _objects(_compose(text), source, modified, base_dir, read_file or _read_text)
    except _Invalid as e:
        raise ConfigFileError(str(e), path=path, line=e.line) from None
