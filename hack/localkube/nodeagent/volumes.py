"""A pod's volumes under <state>/pods/<uid>/volumes: persistentVolumeClaim -> the bound PV's
hostPath directory, emptyDir -> a directory, hostPath as is, configMap/secret/downwardAPI/
projected (service-account tokens from the TokenRequest API, refreshed before they expire)
-> files.

`VolumeSetup` is a part of PodWorker: it needs self.pod, self.ns, self.pod_name, self.uid,
self.dir, self.api, and self._field/self._resource (env.py) for downward API files."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import time
from pathlib import Path

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import Retry, log


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp.startswith(prefix) or mp == str(path):
            out.append(mp)
    return out


def safe_rmtree(path: Path) -> None:
    """rm -rf that refuses to descend into a directory with anything mounted under it."""
    if not path.exists():
        return
    if mounts_under(path):
        log.warning("not removing %s: something is mounted under it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


class VolumeSetup:
    def _get(self, path: str) -> dict:
        try:
            return self.api.get(path)
        except ApiError as e:
            if e.status in (403, 404):
                # 403: the Node authorizer has not yet linked this pod to the object.
                raise Retry("CreateContainerConfigError", f"{path}: {e.reason or e.status}")
            raise

    def _configmap(self, name: str, optional: bool = False) -> dict | None:
        return self._referenced("configmap", "configmaps", name, optional)

    def _secret(self, name: str, optional: bool = False) -> dict | None:
        return self._referenced("secret", "secrets", name, optional)

    def _referenced(self, kind: str, plural: str, name: str, optional: bool) -> dict | None:
        try:
            return self._get(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        except Retry:
            if optional:
                return None
            raise Retry("CreateContainerConfigError", f'{kind} "{name}" not found')

    def _prepare_volumes(self) -> None:
        vols = {}
        self.token_refresh = []
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            vdir = self.dir / "volumes" / name
            if "emptyDir" in v:
                vdir.mkdir(parents=True, exist_ok=True)
                vols[name] = {"path": str(vdir), "readOnly": False}
            elif "hostPath" in v:
                hp = v["hostPath"]
                p = Path(hp["path"])
                if hp.get("type") == "DirectoryOrCreate":
                    p.mkdir(parents=True, exist_ok=True)
                elif hp.get("type") == "FileOrCreate" and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                vols[name] = {"path": str(p), "readOnly": False}
            elif "persistentVolumeClaim" in v:
                ref = v["persistentVolumeClaim"]
                pvc = self._get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{ref['claimName']}")
                if pvc.get("status", {}).get("phase") != "Bound" or not pvc["spec"].get("volumeName"):
                    raise Retry("ContainerCreating", f"waiting for PVC {ref['claimName']} to be bound")
                pv = self._get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
                src = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not src:
                    raise Retry("ContainerCreating",
                                f"PV {pv['metadata']['name']} has no hostPath/local path")
                Path(src).mkdir(parents=True, exist_ok=True)
                vols[name] = {"path": src, "readOnly": bool(ref.get("readOnly"))}
            elif any(k in v for k in ("configMap", "secret", "downwardAPI", "projected")):
                tmp = self.dir / "volumes" / f".{name}.new"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                self._write_files(v, tmp)
                shutil.rmtree(vdir, ignore_errors=True)
                tmp.rename(vdir)
                vols[name] = {"path": str(vdir), "readOnly": True}
            else:
                kind = next((k for k in v if k != "name"), "?")
                raise Retry("CreateContainerConfigError", f"volume type {kind} is not supported")
        self.volumes = vols

    def _write_files(self, v: dict, root: Path) -> None:
        def put(rel: str, data: bytes, mode: int | None, default: int) -> None:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(mode if mode is not None else default)

        def keyed(data: dict[str, bytes], src: dict, default_mode: int, optional_obj: bool) -> None:
            items = src.get("items")
            if items:
                for it in items:
                    if it["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise Retry("CreateContainerConfigError", f"key {it['key']} not found")
                    put(it["path"], data[it["key"]], it.get("mode"), default_mode)
            else:
                for k, val in data.items():
                    put(k, val, None, default_mode)

        def cm_data(src: dict) -> dict[str, bytes] | None:
            cm = self._configmap(src["name"], src.get("optional", False))
            if cm is None:
                return None
            d = {k: val.encode() for k, val in (cm.get("data") or {}).items()}
            d.update({k: base64.b64decode(val) for k, val in (cm.get("binaryData") or {}).items()})
            return d

        def secret_data(src: dict) -> dict[str, bytes] | None:
            s = self._secret(src.get("secretName") or src.get("name"), src.get("optional", False))
            if s is None:
                return None
            return {k: base64.b64decode(val) for k, val in (s.get("data") or {}).items()}

        def downward(items: list, default_mode: int) -> None:
            for it in items:
                if "fieldRef" in it:
                    val = self._field(it["fieldRef"]["fieldPath"], for_file=True)
                else:
                    val = self._resource(it["resourceFieldRef"])
                put(it["path"], val.encode(), it.get("mode"), default_mode)

        if "configMap" in v:
            src = v["configMap"]
            d = cm_data(src)
            if d is not None:
                keyed(d, src, src.get("defaultMode", 0o644), True)
        elif "secret" in v:
            src = v["secret"]
            d = secret_data(src)
            if d is not None:
                keyed(d, src, src.get("defaultMode", 0o644), True)
        elif "downwardAPI" in v:
            downward(v["downwardAPI"].get("items") or [], v["downwardAPI"].get("defaultMode", 0o644))
        else:
            proj = v["projected"]
            mode = proj.get("defaultMode", 0o644)
            for s in proj.get("sources") or []:
                if "configMap" in s:
                    d = cm_data(s["configMap"])
                    if d is not None:
                        keyed(d, s["configMap"], mode, True)
                elif "secret" in s:
                    d = secret_data(s["secret"])
                    if d is not None:
                        keyed(d, s["secret"], mode, True)
                elif "downwardAPI" in s:
                    downward(s["downwardAPI"].get("items") or [], mode)
                elif "serviceAccountToken" in s:
                    tok = s["serviceAccountToken"]
                    token, ttl = self._token(tok)
                    put(tok["path"], token.encode(), None, mode)
                    self.token_refresh.append((time.time() + 0.8 * ttl, tok,
                                               Path(v["name"]) / tok["path"]))
                else:
                    log.warning("pod %s/%s: projected source %s not supported", self.ns,
                                self.pod_name, list(s))

    def _token(self, tok: dict) -> tuple[str, float]:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [tok["audience"]] if tok.get("audience") else [],
                         "expirationSeconds": int(tok.get("expirationSeconds") or 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                            "name": self.pod_name, "uid": self.uid}}}
        try:
            res = self.api.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        except ApiError as e:
            if e.status in (403, 404):
                raise Retry("ContainerCreating", f"service account token for {sa}: {e.reason or e.status}")
            raise
        exp = dt.datetime.strptime(res["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        ttl = exp.replace(tzinfo=dt.timezone.utc).timestamp() - time.time()
        return res["status"]["token"], max(ttl, 60)

    def _refresh_tokens(self, now: float) -> None:
        for i, (due, tok, rel) in enumerate(self.token_refresh):
            if now < due:
                continue
            try:
                token, ttl = self._token(tok)
            except Exception as e:  # noqa: BLE001 - keep the old token, retry later
                log.warning("pod %s/%s: token refresh: %s", self.ns, self.pod_name, e)
                self.token_refresh[i] = (now + 30, tok, rel)
                continue
            target = self.dir / "volumes" / rel
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(token)
            tmp.chmod(target.stat().st_mode & 0o7777)
            # Rewritten in place: a bind-mounted directory sees the new contents.
            target.write_text(token)
            tmp.unlink()
            self.token_refresh[i] = (now + 0.8 * ttl, tok, rel)
