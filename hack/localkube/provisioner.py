"""A dynamic provisioner for the local control plane: every PVC of the `tauon-local` class gets
a PersistentVolume backed by a directory on this machine, as a CSI driver would on a real cluster.

The PV carries a claimRef, so the real PV controller (kube-controller-manager) does the binding.
Released volumes are deleted along with their directory (reclaimPolicy Delete).

    python -m localkube.provisioner --kubeconfig FILE --root DIR [--access-modes ReadWriteOnce]

`--access-modes` lists what the class can provide, as block storage (EBS, PD) offers only
ReadWriteOnce: a claim asking for another mode is refused with a ProvisioningFailed event and
stays Pending, as it would on such a cluster.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from localkube.cluster import PROVISIONER, STORAGE_CLASS

log = logging.getLogger("localkube.provisioner")


def pv_for(pvc: dict, root: Path) -> dict:
    """The PersistentVolume that satisfies a claim: pure, so the rule is readable at once."""
    meta, spec = pvc["metadata"], pvc["spec"]
    path = root / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta['uid']}",
            "labels": {"app.kubernetes.io/managed-by": "localkube"},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


ALL_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def unsupported_modes(pvc: dict, supported: tuple[str, ...]) -> list[str]:
    return [m for m in pvc["spec"].get("accessModes") or [] if m not in supported]


def wants_volume(pvc: dict) -> bool:
    ann = pvc["metadata"].get("annotations") or {}
    ours = (
        ann.get("volume.kubernetes.io/storage-provisioner") == PROVISIONER
        or ann.get("volume.beta.kubernetes.io/storage-provisioner") == PROVISIONER
    )
    return (
        ours
        and not pvc["spec"].get("volumeName")
        and pvc.get("status", {}).get("phase") == "Pending"
    )


def run(kubeconfig: str, root: Path, supported: tuple[str, ...] = ALL_ACCESS_MODES) -> None:
    config.load_kube_config(kubeconfig)
    core = client.CoreV1Api()
    api = client.ApiClient()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            _reconcile_released(core)
            w = watch.Watch()
            for event in w.stream(
                core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=30
            ):
                pvc = api.sanitize_for_serialization(event["object"])
                if event["type"] in ("ADDED", "MODIFIED") and wants_volume(pvc):
                    if bad := unsupported_modes(pvc, supported):
                        _refuse(core, pvc, bad, supported)
                    else:
                        _provision(core, pvc, root)
        except Exception:  # a provisioner keeps going, as the real ones do
            log.exception("watch failed; retrying")
            time.sleep(1)


def _provision(core: client.CoreV1Api, pvc: dict, root: Path) -> None:
    pv = pv_for(pvc, root)
    Path(pv["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
    try:
        core.create_persistent_volume(pv)
        log.info(
            "provisioned %s for %s/%s",
            pv["metadata"]["name"],
            pvc["metadata"]["namespace"],
            pvc["metadata"]["name"],
        )
    except ApiException as e:
        if e.status != 409:  # already provisioned: nothing to do
            raise


def _refuse(core: client.CoreV1Api, pvc: dict, bad: list[str], supported: tuple[str, ...]) -> None:
    """The claim stays Pending; an event says why (once per claim and reason, as an external
    provisioner's ProvisioningFailed would)."""
    meta = pvc["metadata"]
    message = (
        f"failed to provision volume with StorageClass {STORAGE_CLASS!r}: access mode "
        f"{', '.join(bad)} not supported (this class offers {', '.join(supported)})"
    )
    log.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{meta['uid'][:8]}.refused",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
        "reason": "ProvisioningFailed",
        "message": message,
        "type": "Warning",
        "source": {"component": PROVISIONER},
        "count": 1,
    }
    try:
        core.create_namespaced_event(meta["namespace"], event)
    except ApiException as e:
        if e.status != 409:
            raise


def _reconcile_released(core: client.CoreV1Api) -> None:
    for pv in core.list_persistent_volume(
        label_selector="app.kubernetes.io/managed-by=localkube"
    ).items:
        if pv.status.phase == "Released":
            shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
            try:
                core.delete_persistent_volume(pv.metadata.name)
            except ApiException as e:
                if e.status != 404:
                    raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument(
        "--access-modes",
        default=",".join(ALL_ACCESS_MODES),
        help="comma-separated access modes the class provides",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(args.kubeconfig, args.root, tuple(m for m in args.access_modes.split(",") if m))


if __name__ == "__main__":
    main()
