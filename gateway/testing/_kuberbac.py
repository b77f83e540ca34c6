"""
RBAC authorization for the fake API server, as kube-apiserver's RBAC
authorizer decides it, for the rules the gateway's manifests use.

A user restricted with :meth:`RBAC.grant` may do only what one of its
rules allows; users never restricted may do everything (the fake's
default admin). A rule allows a request when its ``apiGroups`` contain the
request's group, its ``resources`` the resource (``plural`` or
``plural/subresource``), its ``verbs`` the verb (``*`` matches anything in
each), and, when it lists ``resourceNames``, the request names one of them:
a ``create``, ``list`` or ``watch`` names no object, so such a rule never
allows those (as the RBAC documentation says). A Role's rules apply in its
namespace only; a ClusterRole bound by a ClusterRoleBinding applies to
cluster-scoped resources and every namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RBAC", "Rule", "rules_for_service_account"]


@dataclass(frozen=True)
class Rule:
    """One PolicyRule, and where it applies (``namespace`` ``None``: everywhere)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None

    @classmethod
    def from_policy(cls, rule: Mapping[str, Any], namespace: str | None) -> Rule:
        return cls(
            frozenset(rule.get("apiGroups") or ()),
            frozenset(rule.get("resources") or ()),
            frozenset(rule.get("verbs") or ()),
            frozenset(rule.get("resourceNames") or ()),
            namespace,
        )

    def allows(
        self, verb: str, group: str, resource: str, namespace: str | None, name: str | None
    ) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if not ({"*", group} & self.api_groups and {"*", verb} & self.verbs):
            return False
        if not ({"*", resource} & self.resources):
            return False
        if self.resource_names:
            return name is not None and verb not in ("create", "list", "watch") and (
                name in self.resource_names
            )
        return True


@dataclass
class RBAC:
    """The grants of restricted users."""

    grants: dict[str, list[Rule]] = field(default_factory=dict)

    def grant(self, user: str, rules: Iterable[Rule]) -> None:
        """Restrict ``user`` to ``rules`` (added to what it had)."""
        self.grants.setdefault(user, []).extend(rules)

    def allows(
        self,
        user: str | None,
        verb: str,
        group: str,
        plural: str,
        subresource: str | None,
        namespace: str | None,
        name: str | None,
    ) -> bool:
        if user not in self.grants:
            return True
        resource = f"{plural}/{subresource}" if subresource else plural
        return any(
            rule.allows(verb, group, resource, namespace, name) for rule in self.grants[user]
        )

    @staticmethod
    def forbidden_message(
        user: str | None, verb: str, group: str, plural: str, subresource: str | None,
        namespace: str | None,
    ) -> str:
        """The API server's wording of a 403."""
        full = f"{plural}.{group}" if group else plural
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        resource = f'"{plural}/{subresource}"' if subresource else f'"{plural}"'
        return (
            f'{full} is forbidden: User "{user}" cannot {verb} resource {resource} in API group '
            f'"{group}"{where}'
        )


def rules_for_service_account(
    documents: Iterable[Mapping[str, Any]], namespace: str, name: str
) -> list[Rule]:
    """
    The rules RBAC manifests (Roles, ClusterRoles and their bindings, as
    parsed YAML documents) grant to ServiceAccount ``namespace/name``.
    Namespaced objects without a namespace are taken to be in ``namespace``
    (where ``kubectl apply -n`` would put them).
    """
    docs = list(documents)

    def role_key(kind: str, role_namespace: str, role_name: str) -> tuple[str, ...]:
        return (kind, role_name) if kind == "ClusterRole" else (kind, role_namespace, role_name)

    roles = {
        role_key(d["kind"], d["metadata"].get("namespace", namespace), d["metadata"]["name"]): d
        for d in docs
        if d.get("kind") in ("Role", "ClusterRole")
    }
    rules: list[Rule] = []
    for binding in docs:
        kind = binding.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        bound_ns = binding["metadata"].get("namespace", namespace)
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == name
            and s.get("namespace", bound_ns) == namespace
            for s in binding.get("subjects") or ()
        ):
            continue
        ref = binding["roleRef"]
        role = roles.get(role_key(ref["kind"], bound_ns, ref["name"]))
        if role is None:
            continue
        # A RoleBinding grants in its namespace (also a ClusterRole's rules).
        scope = None if kind == "ClusterRoleBinding" else bound_ns
        rules.extend(Rule.from_policy(r, scope) for r in role.get("rules") or ())
    return rules
