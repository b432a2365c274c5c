"""Which watch events of a child concern its parent (tauon_operator.relevance)."""

from __future__ import annotations

import copy

from tauon_operator.relevance import matters


def _pod(**status):
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "1", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "worker", "image": "img"}]},
        "status": {"phase": "Pending", **status},
    }


def _changed(obj, edit):
    new = copy.deepcopy(obj)
    edit(new)
    new["metadata"]["resourceVersion"] = "2"
    return new


def test_a_child_never_seen_matters():
    assert matters("Pod", None, _pod())


def test_binding_a_pod_to_a_node_does_not_matter():
    pod = _pod()
    bound = _changed(pod, lambda p: p["spec"].update(nodeName="node-1"))
    assert not matters("Pod", pod, bound)


def test_a_pod_running_or_ending_matters():
    pod = _pod()
    running = _changed(pod, lambda p: p["status"].update(phase="Running"))
    assert matters("Pod", pod, running)
    ended = _changed(
        running,
        lambda p: p["status"].update(
            containerStatuses=[
                {"name": "worker", "state": {"terminated": {"exitCode": 3, "message": "{}"}}}
            ]
        ),
    )
    assert matters("Pod", running, ended)


def test_a_condition_heartbeat_does_not_matter_but_its_status_does():
    cond = {"type": "Ready", "status": "False", "lastProbeTime": "t1"}
    pod = _pod(conditions=[cond])
    beat = _changed(pod, lambda p: p["status"]["conditions"][0].update(lastProbeTime="t2"))
    assert not matters("Pod", pod, beat)
    ready = _changed(pod, lambda p: p["status"]["conditions"][0].update(status="True"))
    assert matters("Pod", pod, ready)


def test_a_pod_being_deleted_matters():
    pod = _pod()
    assert matters(
        "Pod", pod, _changed(pod, lambda p: p["metadata"].update(deletionTimestamp="now"))
    )


def _job(**status):
    return {
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"suspend": False},
        "status": status,
    }


def test_a_jobs_active_count_matters_its_ready_count_does_not():
    job = _job()
    assert matters("Job", job, _changed(job, lambda j: j["status"].update(active=1)))
    active = _job(active=1)
    assert not matters("Job", active, _changed(active, lambda j: j["status"].update(ready=1)))


def test_suspending_a_job_matters():
    job = _job()
    assert matters("Job", job, _changed(job, lambda j: j["spec"].update(suspend=True)))


def test_binding_a_claim_does_not_matter_resizing_it_does():
    claim = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "c", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }

    def bind(c):
        c["spec"]["volumeName"] = "pv-1"
        c["status"]["phase"] = "Bound"
        c["metadata"]["annotations"] = {"pv.kubernetes.io/bind-completed": "yes"}

    assert not matters("PersistentVolumeClaim", claim, _changed(claim, bind))
    grown = _changed(claim, lambda c: c["spec"]["resources"]["requests"].update(storage="2Gi"))
    assert matters("PersistentVolumeClaim", claim, grown)


def test_an_edit_of_what_we_own_matters_a_foreign_annotation_does_not():
    cm = {
        "kind": "ConfigMap",
        "metadata": {
            "name": "c",
            "namespace": "ns",
            "resourceVersion": "1",
            "annotations": {"tauon.dev/spec-hash": "abc"},
        },
        "data": {"config.json": "{}"},
    }
    foreign = _changed(cm, lambda c: c["metadata"]["annotations"].update({"example.com/x": "1"}))
    assert not matters("ConfigMap", cm, foreign)
    edited = _changed(cm, lambda c: c["data"].update({"config.json": '{"epochs": 1}'}))
    assert matters("ConfigMap", cm, edited)
    rehashed = _changed(cm, lambda c: c["metadata"]["annotations"].update({"tauon.dev/spec-hash": "x"}))
    assert matters("ConfigMap", cm, rehashed)


def test_a_deployments_replica_counts_matter_its_condition_timestamps_do_not():
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"replicas": 2},
        "status": {
            "readyReplicas": 1,
            "conditions": [{"type": "Available", "status": "False", "lastUpdateTime": "t1"}],
        },
    }
    later = _changed(dep, lambda d: d["status"]["conditions"][0].update(lastUpdateTime="t2"))
    assert not matters("Deployment", dep, later)
    assert matters("Deployment", dep, _changed(dep, lambda d: d["status"].update(readyReplicas=2)))
    assert matters("Deployment", dep, _changed(dep, lambda d: d["spec"].update(replicas=0)))


def test_a_storage_initializer_failing_or_a_missing_secret_matters_a_backoff_tick_does_not():
    init = {"name": "storage-initializer", "state": {"waiting": {"reason": "PodInitializing"}}}
    pod = _pod(initContainerStatuses=[init])
    failed = _changed(pod, lambda p: p["status"]["initContainerStatuses"][0].update(
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        lastState={"terminated": {"exitCode": 3, "message": '{"error": "ChecksumMismatch"}'}}))
    assert matters("Pod", pod, failed)
    tick = _changed(failed, lambda p: p["status"]["initContainerStatuses"][0]["state"]["waiting"]
                    .update(message="back-off 20s"))
    assert not matters("Pod", failed, tick)
    no_secret = _changed(pod, lambda p: p["status"]["initContainerStatuses"][0].update(
        state={"waiting": {"reason": "CreateContainerConfigError",
                           "message": 'secret "tauon-store" not found'}}))
    assert matters("Pod", pod, no_secret)
