"""The runtime's own identity: one ServiceAccount per custom resource, allowed to patch the
status of that one object and nothing else (least privilege, by resourceNames)."""

from __future__ import annotations

from typing import Any

from tauon_operator.api import GROUP
from tauon_operator.meta import child_name, object_meta
from tauon_runtime.contract.keys import ENV_SERVICEACCOUNT_DIR, ENV_STATUS_TARGET

# Per kind: a Dataset and a TrainingJob of one name (a closed-loop round makes both) must not
# share an identity, or each would rewrite the other's Role to its own object's status.
_IDENTITY_SUFFIX = {"Dataset": "prepare", "TrainingJob": "trainer"}


def service_account_name(parent: dict[str, Any]) -> str:
    return child_name(parent["metadata"]["name"], _IDENTITY_SUFFIX.get(parent["kind"], "runtime"))


def runtime_access(parent: dict[str, Any], plural: str) -> list[dict[str, Any]]:
    name = service_account_name(parent)
    meta = lambda: object_meta(parent, name, "runtime-access")  # noqa: E731 - fresh dict each
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": [f"{plural}/status"],
                    "resourceNames": [parent["metadata"]["name"]],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": name,
                    "namespace": parent["metadata"]["namespace"],
                }
            ],
        },
    ]


def token_volume() -> dict[str, Any]:
    """A short-lived, audience-bound token instead of the legacy automount."""
    return {
        "name": "api-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }


TOKEN_DIR = "/var/run/secrets/tauon.dev/serviceaccount"


def status_env(api_version: str, plural: str, parent: dict[str, Any]) -> list[dict[str, Any]]:
    m = parent["metadata"]
    return [
        {
            "name": ENV_STATUS_TARGET,
            "value": f"{api_version}/namespaces/{m['namespace']}/{plural}/{m['name']}",
        },
        {"name": ENV_SERVICEACCOUNT_DIR, "value": TOKEN_DIR},
    ]
