"""Pod sync: the agent lists and watches the pods bound to its node and hands each to its own
worker (worker.py), told of every change; pods finished before the agent started are only
deleted, and state directories of pods that no longer exist are removed.

`PodSync` is a part of NodeAgent: it needs self.api, self.cfg, self.ips, self.pods_dir,
self.stopped, self.workers and self.wlock."""

from __future__ import annotations

import threading

from localkube.kubeapi import ApiError
from localkube.nodeagent.common import TERMINAL, log
from localkube.nodeagent.volumes import safe_rmtree
from localkube.nodeagent.worker import PodWorker


class PodSync:
    def forget(self, w: PodWorker) -> None:
        pass  # kept in self.workers until the pod is gone, so logs stay reachable

    def workers_snapshot(self) -> list[PodWorker]:
        with self.wlock:
            return list(self.workers.values())

    def worker_for(self, ns: str, name: str) -> PodWorker | None:
        found = [w for w in self.workers_snapshot() if w.ns == ns and w.pod_name == name]
        return found[-1] if found else None

    def sync(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.wlock:
            w = self.workers.get(uid)
            if w is None:
                phase = pod.get("status", {}).get("phase")
                if phase in TERMINAL:
                    # Finished before this agent started: only its deletion is left to do.
                    if meta.get("deletionTimestamp"):
                        threading.Thread(target=self._delete_finished, args=(pod,),
                                         daemon=True).start()
                    return
                w = PodWorker(self, pod)
                # Addresses are taken here, in watch order: a live pod keeps the one it reported.
                self.ips.allocate(uid, pod.get("status", {}).get("podIP"))
                self.workers[uid] = w
                w.start()
                return
        w.update(pod)
        if not w.is_alive() and meta.get("deletionTimestamp"):
            with self.wlock:
                self.workers.pop(uid, None)
            threading.Thread(target=self._delete_finished, args=(pod,), daemon=True).start()

    def _delete_finished(self, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except (ApiError, OSError) as e:
            log.debug("delete %s: %s", meta["name"], e)
        safe_rmtree(self.pods_dir / meta["uid"])

    def gone(self, uid: str) -> None:
        with self.wlock:
            w = self.workers.pop(uid, None)
        if w is not None:
            if w.is_alive():
                w.vanish()
            else:
                safe_rmtree(w.dir)
        else:
            safe_rmtree(self.pods_dir / uid)

    def _watch_loop(self) -> None:
        path = "/api/v1/pods"
        selector = f"spec.nodeName={self.cfg.name}"
        rv = None
        while not self.stopped.is_set():
            try:
                if rv is None:
                    lst = self.api.get(path, fieldSelector=selector)
                    rv = lst["metadata"]["resourceVersion"]
                    seen = {p["metadata"]["uid"] for p in lst["items"]}
                    for w in self.workers_snapshot():
                        if w.uid not in seen:
                            self.gone(w.uid)
                    for p in lst["items"]:  # live pods keep their addresses
                        st = p.get("status", {})
                        if st.get("podIP") and st.get("phase") not in TERMINAL:
                            self.ips.allocate(p["metadata"]["uid"], st["podIP"])
                    for p in lst["items"]:
                        self.sync(p)
                    self._clean_orphan_dirs(seen)
                for ev in self.api.watch(path, {"fieldSelector": selector, "resourceVersion": rv,
                                                "timeoutSeconds": 300}):
                    if self.stopped.is_set():
                        return
                    obj = ev.get("object") or {}
                    if ev["type"] == "ERROR":
                        rv = None if obj.get("code") == 410 else rv
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    if ev["type"] == "DELETED":
                        self.gone(obj["metadata"]["uid"])
                    else:
                        self.sync(obj)
            except ApiError as e:
                log.warning("pod watch: %s", e)
                rv = None
                self.stopped.wait(1)
            except Exception as e:  # noqa: BLE001 - the agent keeps going
                log.warning("pod watch: %r", e)
                rv = None
                self.stopped.wait(1)

    def _clean_orphan_dirs(self, live_uids: set[str]) -> None:
        for d in self.pods_dir.iterdir():
            if d.is_dir() and d.name not in live_uids:
                safe_rmtree(d)
