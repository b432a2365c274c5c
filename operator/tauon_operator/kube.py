"""The few API calls the operator makes: get, list, server-side apply, status merge-patch,
delete.

The official client is synchronous; every call runs in a worker thread so no handler blocks the
event loop. 404 on get/delete is an answer (None / nothing to do), not an error.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tauon_operator.meta import FIELD_MANAGER

# (apiVersion, kind) -> plural: the kinds we read or write.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",  # read by the console
    ("v1", "Node"): "nodes",  # listed (never watched) to name the taints a pod lacks
    ("batch/v1", "Job"): "jobs",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("tauon.dev/v1alpha1", "Dataset"): "datasets",
    ("tauon.dev/v1alpha1", "TrainingJob"): "trainingjobs",
    ("tauon.dev/v1alpha1", "ModelDeployment"): "modeldeployments",
    ("kueue.x-k8s.io/v1beta2", "Workload"): "workloads",  # read only: Kueue's decisions
}


def path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The resource path; namespace None: the kind across every namespace (a list)."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace is not None else ""
    p = f"{prefix}{scope}/{PLURALS[(api_version, kind)]}"
    if name:
        p += f"/{name}"
    if subresource:
        p += f"/{subresource}"
    return p


class Kube:
    """A thin async facade over the official client's ApiClient."""

    def __init__(self, api: client.ApiClient | None = None):
        self.api = api or client.ApiClient()

    @classmethod
    def from_environment(cls, pool: int = 16) -> Kube:
        """In a pod, its service account; else KUBECONFIG. `pool` connections, one per worker."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            # Read KUBECONFIG now: the client's default was frozen when it was imported.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
            )
        cfg.connection_pool_maxsize = pool
        return cls(client.ApiClient(cfg))

    async def _call(
        self,
        method: str,
        resource_path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list | None = None,
    ) -> Any:
        return await asyncio.to_thread(
            self._call_sync, method, resource_path, body, content_type, query or []
        )

    def _call_sync(
        self, method: str, resource_path: str, body: Any, content_type: str, query: list
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, payload, _ = self.api.param_serialize(
            method=method,
            resource_path=resource_path,
            query_params=query,
            # The client JSON-encodes bodies of JSON content types itself; an apply patch
            # (YAML content type) goes as text, and JSON is valid YAML.
            header_params=headers,
            body=body if "json" in content_type or body is None else json.dumps(body),
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(
            method, url, header_params=headers, body=payload, _request_timeout=30
        )
        resp.read()
        if resp.status >= 400:
            err = ApiException(status=resp.status, reason=resp.reason)
            err.body = resp.data
            raise err
        return json.loads(resp.data) if resp.data else None

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return await self._call("GET", path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def served_sync(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves `kind` in `api_version` (discovery; a group that is
        not installed answers 404)."""
        try:
            body = self._call_sync("GET", f"/apis/{api_version}", None, "application/json", [])
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return any(r.get("kind") == kind for r in (body or {}).get("resources") or [])

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict]:
        """Every object of a kind (in one namespace, or all), read in pages. Each item carries
        its apiVersion and kind, as a watch event's object does."""
        items, _ = await asyncio.to_thread(
            self.list_objects_sync, api_version, kind, namespace, label_selector
        )
        return items

    def list_objects_sync(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        page: int = 500,
    ) -> tuple[list[dict], str]:
        """`list_objects`, blocking; also returns the list's resourceVersion (to watch from)."""
        items: list[dict] = []
        token = None
        while True:
            query: list[tuple[str, Any]] = [("limit", page)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            body = self._call_sync(
                "GET", path(api_version, kind, namespace), None, "application/json", query
            )
            for item in body.get("items") or []:
                items.append({"apiVersion": api_version, "kind": kind, **item})
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, meta.get("resourceVersion", "")

    def watch_sync(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout: int = 120,
    ) -> Iterator[dict]:
        """The watch events after `resource_version`, blocking, until the server ends the
        stream (after `timeout` seconds, with bookmarks on the way)."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        headers = {"Accept": "application/json"}
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET",
            resource_path=path(api_version, kind, namespace),
            query_params=query,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(
            method, url, header_params=headers, _request_timeout=(10, timeout + 30)
        )
        if resp.status >= 400:
            err = ApiException(status=resp.status, reason=resp.reason)
            err.body = resp.read()
            raise err
        stream = resp.response
        try:
            buf = b""
            for chunk in stream.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            stream.release_conn()

    async def apply(self, obj: dict) -> dict:
        """Server-side apply with our field manager; we own what we set."""
        meta = obj["metadata"]
        return await self._call(
            "PATCH",
            path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            body=obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict
    ) -> dict:
        """A JSON merge patch of the object (for the few fields we change in place)."""
        return await self._call(
            "PATCH",
            path(api_version, kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict
    ) -> dict | None:
        try:
            return await self._call(
                "PATCH",
                path(api_version, kind, namespace, name, "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile: nothing left to report on
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call(
                "DELETE",
                path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiException as e:
            if e.status != 404:
                raise
