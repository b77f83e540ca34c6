"""Tests for the fake API server's RBAC rules (gateway.testing._kuberbac)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.testing._kuberbac import RBAC, Rule, rules_for_service_account

ROLE = {
    "kind": "Role",
    "metadata": {"name": "r"},
    "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["lock"], "verbs": ["get", "update", "create"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
    ],
}
CLUSTER_ROLE = {"kind": "ClusterRole", "metadata": {"name": "c"},
                "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["ingressclasses"], "verbs": ["*"]}]}
BINDINGS = [
    {"kind": "RoleBinding", "metadata": {"name": "rb"}, "roleRef": {"kind": "Role", "name": "r"},
     "subjects": [{"kind": "ServiceAccount", "name": "sa"}]},
    {"kind": "ClusterRoleBinding", "metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "c"},
     "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "apps"}]},
]


class RBACTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rbac = RBAC()
        self.rbac.grant("u", rules_for_service_account([ROLE, CLUSTER_ROLE, *BINDINGS], "apps", "sa"))

    def allows(self, verb: str, group: str, plural: str, namespace: str | None, name: str | None = None,
               subresource: str | None = None) -> bool:
        return self.rbac.allows("u", verb, group, plural, subresource, namespace, name)

    def test_role_is_namespaced(self) -> None:
        self.assertTrue(self.allows("list", "", "secrets", "apps"))
        self.assertFalse(self.allows("list", "", "secrets", "other"))
        self.assertFalse(self.allows("watch", "", "secrets", "apps"))

    def test_resource_names_never_allow_create_list_watch(self) -> None:
        self.assertTrue(self.allows("get", "coordination.k8s.io", "leases", "apps", "lock"))
        self.assertFalse(self.allows("get", "coordination.k8s.io", "leases", "apps", "other"))
        self.assertFalse(self.allows("create", "coordination.k8s.io", "leases", "apps", None))

    def test_subresources_are_separate(self) -> None:
        self.assertTrue(self.allows("update", "networking.k8s.io", "ingresses", "apps", "x", "status"))
        self.assertFalse(self.allows("update", "networking.k8s.io", "ingresses", "apps", "x"))

    def test_cluster_role_binding_applies_everywhere(self) -> None:
        self.assertTrue(self.allows("watch", "networking.k8s.io", "ingressclasses", None))
        self.assertEqual(
            RBAC.forbidden_message("u", "list", "", "secrets", None, "other"),
            'secrets is forbidden: User "u" cannot list resource "secrets" in API group "" in the '
            'namespace "other"',
        )

    def test_other_service_accounts_and_unrestricted_users(self) -> None:
        self.assertEqual(rules_for_service_account([ROLE, *BINDINGS], "apps", "someone-else"), [])
        self.assertTrue(self.rbac.allows("admin", "delete", "", "secrets", None, "x", "y"))
        self.assertIsInstance(self.rbac.grants["u"][0], Rule)
