"""A container's environment, as kubelet builds it: the image's env, the Kubernetes service
variables, envFrom and env (ConfigMaps, Secrets, the downward API: fields and resources), with
Kubernetes' $(VAR) expansion.

`ContainerEnv` is a part of PodWorker: it needs self.pod, self.ip, self.ns, self.api,
self.agent.cfg, and reads ConfigMaps and Secrets through self._configmap/self._secret
(volumes.py)."""

from __future__ import annotations

import base64
import json
import math
import os
import re

from localkube.nodeagent.common import Retry
from localkube.nodeagent.dns import pod_hostname


_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}


def parse_quantity(q) -> float:
    m = re.fullmatch(r"([+-]?[0-9.]+)(?:[eE]([+-]?\d+)|([a-zA-Z]*))", str(q).strip())
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    value = float(m.group(1))
    if m.group(2):
        return value * 10 ** int(m.group(2))
    return value * _SUFFIX[m.group(3) or ""]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $(VAR) -> value if defined, else left as is; $$ -> $."""
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2:close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


class ContainerEnv:
    def _field(self, path: str, for_file: bool = False) -> str:
        pod, meta = self.pod, self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"], "spec.nodeName": self.agent.cfg.name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1",
            "status.podIP": self.ip, "status.podIPs": self.ip,
        }
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            d = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{json.dumps(v)[1:-1]}"' for k, v in sorted(d.items()))
        raise Retry("CreateContainerConfigError", f"unsupported fieldPath {path}")

    def _resource(self, ref: dict, container: dict | None = None) -> str:
        cname = ref.get("containerName")
        c = container
        if cname or c is None:
            c = next((x for x in self.pod["spec"]["containers"] if x["name"] == cname),
                     self.pod["spec"]["containers"][0])
        kind, _, res = ref["resource"].partition(".")
        resources = c.get("resources") or {}
        val = (resources.get(kind) or {}).get(res)
        if val is None and kind == "requests":
            val = (resources.get("limits") or {}).get(res)
        if val is None:
            val = self.agent.cfg.capacity().get(res, "0")
        divisor = parse_quantity(ref.get("divisor") or "1") or 1
        return str(math.ceil(parse_quantity(val) / divisor))

    def _env(self, c: dict) -> dict[str, str]:
        cfg = self.agent.cfg
        api_port = str(self.api.port)
        env = {
            "PATH": cfg.image_env.get("PATH", os.environ.get("PATH", "/usr/bin:/bin")),
            "HOSTNAME": pod_hostname(self.pod),
            "HOME": "/root",
        }
        env.update(cfg.image_env)
        service = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": api_port,
                   "KUBERNETES_SERVICE_PORT_HTTPS": api_port,
                   "KUBERNETES_PORT": f"tcp://127.0.0.1:{api_port}",
                   "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{api_port}",
                   "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                   "KUBERNETES_PORT_443_TCP_PORT": api_port,
                   "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
                   "GLOO_SOCKET_IFNAME": "lo"}
        env.update(service)
        pod_env: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref = src["configMapRef"]
                cm = self._configmap(ref["name"], ref.get("optional", False)) or {}
                for k, val in (cm.get("data") or {}).items():
                    pod_env[prefix + k] = val
            elif "secretRef" in src:
                ref = src["secretRef"]
                s = self._secret(ref["name"], ref.get("optional", False)) or {}
                for k, val in (s.get("data") or {}).items():
                    pod_env[prefix + k] = base64.b64decode(val).decode(errors="replace")
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                pod_env[name] = expand(e.get("value", ""), {**env, **pod_env})
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                pod_env[name] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                pod_env[name] = self._resource(vf["resourceFieldRef"], c)
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                cm = self._configmap(ref["name"], ref.get("optional", False))
                data = (cm or {}).get("data") or {}
                if ref["key"] in data:
                    pod_env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise Retry("CreateContainerConfigError",
                                f"couldn't find key {ref['key']} in ConfigMap {self.ns}/{ref['name']}")
            elif "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                s = self._secret(ref["name"], ref.get("optional", False))
                data = (s or {}).get("data") or {}
                if ref["key"] in data:
                    pod_env[name] = base64.b64decode(data[ref["key"]]).decode(errors="replace")
                elif not ref.get("optional"):
                    raise Retry("CreateContainerConfigError",
                                f"couldn't find key {ref['key']} in Secret {self.ns}/{ref['name']}")
        env.update(pod_env)
        return env
