"""
The state and write semantics of :mod:`gateway.testing.fakekube`, without
HTTP: the objects, the global resourceVersion, the retained history of
changes, and what a create, update, patch or delete does to an object.

Kept free of Twisted so that the rules read like the API server's own
(``k8s.io/apiserver/pkg/registry/generic/registry/store.go`` and the
per-kind strategies): what the server sets on create, what an update may
not change, when ``generation`` moves, which writes conflict, and which
watch event a write becomes for a watcher with a selector.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._kubeselect import FieldSelector, LabelSelector, dig

__all__ = [
    "RESOURCES",
    "ApiStatus",
    "Change",
    "KubeState",
    "Resource",
    "merge_patch",
    "not_found",
    "status_body",
    "watch_event",
]

JSON = dict[str, Any]

#: The fields every kind can be selected by.
_META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    """
    One resource type the fake serves, as the API server's discovery
    describes it.

    :ivar status_subresource: ``/status`` exists; the main resource then
        ignores ``status`` on create and update, and ``/status`` changes
        nothing but ``status``.
    :ivar tracks_generation: ``metadata.generation`` starts at 1 and grows
        whenever anything but metadata and status changes.
    :ivar fields: the field labels selectable besides name and namespace.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool = False
    tracks_generation: bool = False
    fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``ingresses.networking.k8s.io``, as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def field_allowed(self, name: str) -> bool:
        if name in _META_FIELDS or name in self.fields:
            return True
        return False

    def selectable(self, obj: Mapping[str, Any]) -> dict[str, str]:
        return {name: dig(obj, name) for name in (*_META_FIELDS, *self.fields)}


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "",
        "v1",
        "Namespace",
        "namespaces",
        False,
        status_subresource=True,
        fields=("status.phase",),
    ),
    Resource("", "v1", "Service", "services", True, status_subresource=True),
    Resource("", "v1", "Secret", "secrets", True, fields=("type",)),
    Resource(
        "",
        "v1",
        "Event",
        "events",
        True,
        fields=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ),
    ),
    Resource(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        True,
        status_subresource=True,
        tracks_generation=True,
    ),
    Resource(
        "networking.k8s.io", "v1", "IngressClass", "ingressclasses", False, tracks_generation=True
    ),
    Resource(
        "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, tracks_generation=True
    ),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    # The Gateway API kinds, as their standard-channel CRDs declare them:
    # ``subresources: status`` on all but ReferenceGrant, and (as for every
    # custom resource) ``generation`` tracked.
    Resource(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        False,
        status_subresource=True,
        tracks_generation=True,
    ),
    Resource(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        True,
        status_subresource=True,
        tracks_generation=True,
    ),
    Resource(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        True,
        status_subresource=True,
        tracks_generation=True,
    ),
    Resource(
        "gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
        True,
        tracks_generation=True,
    ),
)


def _pending(*types: str) -> JSON:
    return {
        "conditions": [
            {
                "lastTransitionTime": "1970-01-01T00:00:00Z",
                "message": "Waiting for controller",
                "reason": "Pending",
                "status": "Unknown",
                "type": t,
            }
            for t in types
        ]
    }


#: The ``status`` the standard-channel v1 CRDs default for an object that
#: has none. The API server applies CRD defaults whenever it decodes an
#: object, from a request or from storage, so a created object (whose
#: status is dropped on create) is read back with this status.
_DEFAULT_STATUS: dict[str, JSON] = {
    "gatewayclasses": _pending("Accepted"),
    "gateways": _pending("Accepted", "Programmed"),
}

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ApiStatus(Exception):
    """
    A failed request, as the API server reports it: a ``Status`` object
    with an HTTP code, a machine-readable reason and a message.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JSON | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> JSON:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    """A ``v1.Status`` failure object as the API server writes it."""
    body: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _details(resource: Resource, name: str) -> JSON:
    details: JSON = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return details


def not_found(resource: Resource, name: str) -> ApiStatus:
    return ApiStatus(
        404, "NotFound", f'{resource.qualified} "{name}" not found', _details(resource, name)
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """
    Apply an RFC 7386 JSON merge patch: objects merge recursively, ``null``
    removes a member, anything else (lists included) replaces.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Change:
    """
    One write, as the history retains it and watchers see it.

    :ivar rv: the resourceVersion the write produced.
    :ivar type: ``ADDED``, ``MODIFIED`` or ``DELETED``.
    :ivar obj: the object after the write; for a delete, the object as it
        was, carrying the deletion's resourceVersion (as upstream).
    :ivar previous: the object before the write (``None`` for a create).
    """

    rv: int
    resource: Resource
    type: str
    obj: JSON
    previous: JSON | None


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


@dataclass
class _Filter:
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    def matches(self, resource: Resource, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(
            resource.selectable(obj)
        )


def watch_event(change: Change, flt: _Filter) -> tuple[str, JSON] | None:
    """
    What a watcher with filter ``flt`` sees of ``change``: an object that
    starts matching is ADDED, one that stops matching is DELETED (the old
    object, at the change's resourceVersion, as the watch cache does), or
    nothing.
    """
    was = flt.matches(change.resource, change.previous)
    now = change.type != "DELETED" and flt.matches(change.resource, change.obj)
    if was and now:
        return "MODIFIED", change.obj
    if now:
        return "ADDED", change.obj
    if was:
        if change.type == "DELETED":
            return "DELETED", change.obj
        gone = copy.deepcopy(change.previous)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(change.rv)
        return "DELETED", gone
    return None


class KubeState:
    """
    Every object the fake holds, the global resourceVersion counter and
    the retained history of changes.

    All writes go through here; each one increments the counter, stores a
    :class:`Change` and hands it to ``on_change`` (the HTTP layer fans it
    out to watchers).

    :ivar rv: the latest resourceVersion.
    :ivar compacted: changes at or before this version are no longer
        retained: a watch or an exact list from an older version is
        answered ``410 Gone``.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self._now = now
        self._on_change = on_change
        self.rv = 0
        self.compacted = 0
        self._objects: dict[str, dict[tuple[str, str], JSON]] = {r.plural: {} for r in RESOURCES}
        self._history: list[Change] = []
        self._cluster_ips = (str(ipaddress.ip_address("10.96.0.10") + i) for i in range(1, 1 << 16))
        for ns in ("default", "kube-system", "kube-public"):
            self.create(self.resource("namespaces"), {"metadata": {"name": ns}}, None)

    # -- lookups ---------------------------------------------------------

    @staticmethod
    def resource(plural: str, group: str | None = None) -> Resource:
        for r in RESOURCES:
            if r.plural == plural and (group is None or r.group == group):
                return r
        raise KeyError(plural)

    @staticmethod
    def resource_for(api_version: str, kind: str) -> Resource:
        for r in RESOURCES:
            if r.kind == kind and r.api_version == api_version:
                return r
        raise KeyError(f"{api_version} {kind}")

    def current(self, resource: Resource, namespace: str | None, name: str) -> JSON | None:
        return self._objects[resource.plural].get((namespace or "", name))

    def objects_of(self, resource: Resource) -> Mapping[tuple[str, str], JSON]:
        """The current objects of one resource by (namespace, name); not to be modified."""
        return self._objects[resource.plural]

    def get(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        obj = self.current(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return self.present(resource, obj)

    @staticmethod
    def present(resource: Resource, obj: JSON) -> JSON:
        """A copy of a stored object with its ``kind`` and ``apiVersion``."""
        out = {"kind": resource.kind, "apiVersion": resource.api_version}
        out.update(copy.deepcopy(obj))
        return out

    def state_at(self, resource: Resource, rv: int) -> dict[tuple[str, str], JSON]:
        """
        The objects of ``resource`` as they were at version ``rv``: the
        current ones with the retained changes after ``rv`` undone.

        :raises ApiStatus: 410 Expired if ``rv`` is older than the history.
        """
        if rv < self.compacted:
            raise self.expired(rv)
        objects = dict(self._objects[resource.plural])
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.resource is not resource:
                continue
            key = _key(change.obj)
            if change.previous is None:
                objects.pop(key, None)
            else:
                objects[key] = change.previous
        return objects

    def changes_after(self, rv: int) -> Iterator[Change]:
        """
        The retained changes after ``rv``, oldest first.

        :raises ApiStatus: 410 Expired if ``rv`` is older than the history.
        """
        if rv < self.compacted:
            raise self.expired(rv)
        return (c for c in list(self._history) if c.rv > rv)

    def expired(self, rv: int) -> ApiStatus:
        return ApiStatus(410, "Expired", f"too old resource version: {rv} ({self.compacted + 1})")

    def compact(self, rv: int | None = None) -> None:
        """Forget the changes up to ``rv`` (default: all of them)."""
        target = self.rv if rv is None else min(rv, self.rv)
        self.compacted = max(self.compacted, target)
        self._history = [c for c in self._history if c.rv > self.compacted]

    def select(
        self,
        resource: Resource,
        objects: Mapping[tuple[str, str], JSON],
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> list[tuple[tuple[str, str], JSON]]:
        """The matching objects in key order (namespace, then name), as etcd lists them."""
        flt = _Filter(namespace, labels, fields)
        return [(k, objects[k]) for k in sorted(objects) if flt.matches(resource, objects[k])]

    # -- writes ----------------------------------------------------------

    def _commit(self, resource: Resource, kind: str, obj: JSON, previous: JSON | None) -> JSON:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = _key(obj)
        if kind == "DELETED":
            del self._objects[resource.plural][key]
        else:
            self._objects[resource.plural][key] = obj
        change = Change(
            self.rv,
            resource,
            kind,
            copy.deepcopy(obj),
            copy.deepcopy(previous) if previous is not None else None,
        )
        self._history.append(change)
        if self._on_change is not None:
            self._on_change(change)
        return self.present(resource, obj)

    def _managed(
        self, obj: JSON, resource: Resource, manager: str, subresource: str | None
    ) -> None:
        entries = [
            e
            for e in obj["metadata"].get("managedFields") or []
            if not (
                e.get("manager") == manager
                and e.get("operation") == "Update"
                and e.get("subresource") == subresource
            )
        ]
        entry: JSON = {
            "manager": manager,
            "operation": "Update",
            "apiVersion": resource.api_version,
            "time": _rfc3339(self._now()),
            "fieldsType": "FieldsV1",
            "fieldsV1": {},
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
        obj["metadata"]["managedFields"] = entries

    def _check_type(self, resource: Resource, body: Any) -> JSON:
        if not isinstance(body, dict):
            raise ApiStatus(400, "BadRequest", "the body of the request must be a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != resource.kind) or (
            api_version and api_version != resource.api_version
        ):
            raise ApiStatus(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({resource.api_version}) or kind ({kind} is not {resource.kind})",
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ApiStatus(400, "BadRequest", "metadata must be an object")
        obj = copy.deepcopy(body)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        obj.setdefault("metadata", {})
        return obj

    def _check_namespace(self, resource: Resource, obj: JSON, namespace: str | None) -> None:
        meta = obj["metadata"]
        if not resource.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and given != namespace:
            raise ApiStatus(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        meta["namespace"] = namespace
        if self.current(self.resource("namespaces"), None, namespace or "") is None:
            raise not_found(self.resource("namespaces"), namespace or "")

    def _invalid(self, resource: Resource, name: str, message: str) -> ApiStatus:
        details = _details(resource, name)
        details["kind"] = resource.kind
        return ApiStatus(422, "Invalid", f'{resource.kind} "{name}" is invalid: {message}', details)

    def _validate(self, resource: Resource, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        pattern = _DNS_LABEL if resource.plural in ("namespaces", "services") else _DNS_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name):
            raise self._invalid(resource, name, f"metadata.name: Invalid value: {name!r}")
        if resource.plural == "secrets":
            data = obj.get("data") or {}
            for key, value in data.items():
                if not _SECRET_KEY.match(key):
                    raise self._invalid(resource, name, f"data[{key}]: Invalid value")
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError):
                    raise self._invalid(
                        resource, name, f"data[{key}]: illegal base64 data"
                    ) from None
            if obj.get("type") == "kubernetes.io/tls":
                for key in ("tls.crt", "tls.key"):
                    if key not in data:
                        raise self._invalid(resource, name, f"data[{key}]: Required value")
        elif resource.plural == "leases":
            self._validate_lease(resource, name, obj.get("spec") or {})
        elif resource.plural == "events":
            self._validate_event(resource, name, obj)

    def _validate_lease(self, resource: Resource, name: str, spec: Mapping[str, Any]) -> None:
        """
        ``ValidateLeaseSpec``: the duration is a positive whole number of
        seconds and the transition count is not negative (a fractional
        number does not even decode into the ``int32`` field).
        """
        for field, minimum in (("leaseDurationSeconds", 1), ("leaseTransitions", 0)):
            value = spec.get(field)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise ApiStatus(
                    400,
                    "BadRequest",
                    f'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal '
                    f"{json.dumps(value)} into Go struct field LeaseSpec.spec.{field} of type "
                    "int32",
                )
            if value < minimum:
                must = "must be greater than 0" if minimum else "must be greater than or equal to 0"
                raise self._invalid(resource, name, f"spec.{field}: Invalid value: {value}: {must}")

    def _validate_event(self, resource: Resource, name: str, obj: Mapping[str, Any]) -> None:
        """
        ``legacyValidateEvent`` for a core/v1 Event without ``eventTime``:
        it lives in its involved object's namespace, or in ``default``
        when that object is cluster-scoped.
        """
        if obj.get("eventTime"):
            return
        namespace = obj["metadata"].get("namespace") or ""
        involved = (obj.get("involvedObject") or {}).get("namespace") or ""
        if (involved and namespace != involved) or (
            not involved and namespace not in ("", "default")
        ):
            raise self._invalid(
                resource,
                name,
                f'involvedObject.namespace: Invalid value: "{involved}": does not match '
                "event.namespace",
            )

    def _normalize(self, resource: Resource, obj: JSON, previous: JSON | None) -> None:
        """What the per-kind strategies do to every written object."""
        if resource.plural == "secrets":
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
            obj.setdefault("type", "Opaque")
            if previous is not None and obj["type"] != previous.get("type"):
                raise self._invalid(
                    resource, obj["metadata"]["name"], "type: Invalid value: field is immutable"
                )
        elif resource.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if previous is not None:
                old_ip = (previous.get("spec") or {}).get("clusterIP")
                spec.setdefault("clusterIP", old_ip)
            if spec["type"] != "ExternalName":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = next(self._cluster_ips)
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        elif resource.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif resource.plural == "ingresses":
            obj.setdefault("status", {"loadBalancer": {}})
        elif resource.plural == "gatewayclasses" and previous is not None:
            # The CRD's CEL rule ``self == oldSelf`` on spec.controllerName.
            old_controller = (previous.get("spec") or {}).get("controllerName")
            if (obj.get("spec") or {}).get("controllerName") != old_controller:
                raise self._invalid(
                    resource,
                    obj["metadata"]["name"],
                    'spec.controllerName: Invalid value: "string": Value is immutable',
                )
        if resource.plural == "services":
            obj.setdefault("status", {"loadBalancer": {}})

    def create(
        self,
        resource: Resource,
        body: Any,
        namespace: str | None,
        *,
        manager: str = "unknown",
    ) -> JSON:
        """``POST`` a new object; ``409 AlreadyExists`` if the name is taken."""
        obj = self._check_type(resource, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiStatus(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise self._invalid(
                    resource, "", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = prefix + uuid.uuid4().hex[:5]
        self._check_namespace(resource, obj, namespace)
        if resource.status_subresource and resource.plural != "namespaces":
            obj.pop("status", None)
        self._normalize(resource, obj, None)
        self._validate(resource, obj)
        if self.current(resource, namespace, meta["name"]) is not None:
            raise ApiStatus(
                409,
                "AlreadyExists",
                f'{resource.qualified} "{meta["name"]}" already exists',
                _details(resource, meta["name"]),
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _rfc3339(self._now())
        for transient in ("deletionTimestamp", "generation"):
            meta.pop(transient, None)
        if resource.tracks_generation:
            meta["generation"] = 1
        meta.pop("managedFields", None)
        self._default_status(resource, obj)
        self._managed(obj, resource, manager, None)
        return self._commit(resource, "ADDED", obj, None)

    def update(
        self,
        resource: Resource,
        body: Any,
        namespace: str | None,
        name: str,
        *,
        subresource: str | None = None,
        manager: str = "unknown",
        merge: Any = None,
    ) -> JSON:
        """
        ``PUT`` (or, with ``merge``, ``PATCH``) an existing object.

        A ``metadata.resourceVersion`` in the body is a precondition: it
        must be the current one, else ``409 Conflict``. Without one the
        update is unconditional. ``uid`` and ``creationTimestamp`` cannot be
        changed; with a status subresource the main resource keeps its
        status and ``/status`` keeps everything but the status.
        """
        old = self.current(resource, namespace, name)
        if old is None:
            raise not_found(resource, name)
        if merge is not None:
            if not isinstance(merge, dict):
                raise ApiStatus(400, "BadRequest", "the patch must be a JSON object")
            # The merged body carries the current version unless the patch
            # names one, which then is a precondition like an update's.
            body = merge_patch(self.present(resource, old), merge)
        obj = self._check_type(resource, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, name):
            raise ApiStatus(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({name})",
            )
        meta["name"] = name
        if resource.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiStatus(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise ApiStatus(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                _details(resource, name),
            )
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            obj = new
        else:
            if resource.status_subresource:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            for fixed in ("uid", "creationTimestamp", "namespace", "generation"):
                if fixed in old["metadata"]:
                    meta[fixed] = old["metadata"][fixed]
                else:
                    meta.pop(fixed, None)
            meta["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields", []))
            self._normalize(resource, obj, old)
            self._validate(resource, obj)
            if resource.tracks_generation and self._spec_of(obj) != self._spec_of(old):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self._default_status(resource, obj)
        if obj == old:
            # A no-op write changes nothing, not even the resourceVersion.
            return self.present(resource, old)
        self._managed(obj, resource, manager, subresource)
        return self._commit(resource, "MODIFIED", obj, old)

    @staticmethod
    def _default_status(resource: Resource, obj: JSON) -> None:
        if "status" not in obj and resource.plural in _DEFAULT_STATUS:
            obj["status"] = copy.deepcopy(_DEFAULT_STATUS[resource.plural])

    @staticmethod
    def _spec_of(obj: JSON) -> JSON:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        preconditions: Mapping[str, Any] | None = None,
    ) -> JSON:
        """
        ``DELETE`` an object now (the fake has no finalizers or graceful
        deletion). ``preconditions`` (``uid``, ``resourceVersion``) must
        match, else ``409 Conflict``. Deleting a namespace deletes what is in it.
        """
        old = self.current(resource, namespace, name)
        if old is None:
            raise not_found(resource, name)
        for key in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(key)
            if wanted and wanted != old["metadata"].get(key):
                raise ApiStatus(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.qualified} "{name}": Precondition '
                    f"failed: {key}: {wanted}, {key} in object meta: {old['metadata'].get(key)}",
                    _details(resource, name),
                )
        if resource.plural == "namespaces":
            for other in RESOURCES:
                if other.namespaced:
                    for key in sorted(self._objects[other.plural]):
                        if key[0] == name:
                            self.delete(other, name, key[1])
        gone = copy.deepcopy(old)
        self._commit(resource, "DELETED", gone, old)
        details = _details(resource, name)
        details["uid"] = old["metadata"]["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # -- test controls ---------------------------------------------------

    def put(self, obj: Mapping[str, Any], *, manager: str = "fakekube") -> JSON:
        """
        Create or replace an object as a test sets it: no preconditions,
        namespaces created as needed; still a real write (new version,
        history, watch events).
        """
        resource = self.resource_for(obj["apiVersion"], obj["kind"])
        namespace = (obj.get("metadata") or {}).get("namespace") or (
            "default" if resource.namespaced else None
        )
        if (
            resource.namespaced
            and self.current(self.resource("namespaces"), None, namespace or "") is None
        ):
            self.create(
                self.resource("namespaces"),
                {"metadata": {"name": namespace}},
                None,
                manager=manager,
            )
        name = obj["metadata"]["name"]
        body = copy.deepcopy(dict(obj))
        body["metadata"].pop("resourceVersion", None)
        status = body.get("status")
        if self.current(resource, namespace, name) is None:
            created = self.create(resource, body, namespace, manager=manager)
            if status is None or not resource.status_subresource:
                return created
        else:
            self.update(resource, body, namespace, name, manager=manager)
        if status is not None and resource.status_subresource:
            return self.update(
                resource, {"status": status}, namespace, name, subresource="status", manager=manager
            )
        return self.get(resource, namespace, name)

    def dump(self) -> str:
        """Every object, for a failing test's message."""
        return json.dumps(
            {
                p: {"/".join(k): v for k, v in objs.items()}
                for p, objs in self._objects.items()
                if objs
            },
            indent=1,
            sort_keys=True,
        )

    def all_objects(self, resource: Resource) -> Iterable[JSON]:
        return [
            self.present(resource, o) for _, o in sorted(self._objects[resource.plural].items())
        ]

    def filter(
        self, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> _Filter:
        return _Filter(namespace, labels, fields)
