"""When a child in the cluster no longer holds what the operator wants (tauon_operator.drift)."""

from __future__ import annotations

from tauon_operator.drift import drifted

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "namespace": "ns", "labels": {"app": "x"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "runtime:1",
                        "args": ["serve"],
                        "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}},
                    }
                ],
                "volumes": [],
            }
        },
    },
}


def _current(**edits):
    import copy

    cur = copy.deepcopy(DESIRED)
    cur["metadata"].update(resourceVersion="7", uid="u", annotations={"other.io/x": "1"})
    c = cur["spec"]["template"]["spec"]["containers"][0]
    c.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    c["resources"]["requests"]["cpu"] = "500m"  # the API server's canonical form
    del cur["spec"]["template"]["spec"]["volumes"]  # an empty list is dropped
    cur["status"] = {"readyReplicas": 2}
    for path, value in edits.items():
        obj = cur
        *head, last = path.split(".")
        for k in head:
            obj = obj[int(k)] if k.isdigit() else obj[k]
        obj[last] = value
    return cur


def test_defaults_and_other_managers_fields_are_not_drift():
    assert drifted(DESIRED, _current()) == []


def test_a_changed_image_is_drift_at_its_path():
    cur = _current(**{"spec.template.spec.containers.0.image": "evil.example/x:1"})
    assert drifted(DESIRED, cur) == ["spec.template.spec.containers[0].image"]


def test_replicas_scaled_down_and_an_argument_added_are_drift():
    cur = _current(**{"spec.replicas": 0, "spec.template.spec.containers.0.args": ["serve", "-x"]})
    assert drifted(DESIRED, cur) == ["spec.replicas", "spec.template.spec.containers[0].args"]


def test_a_removed_label_is_drift():
    cur = _current()
    cur["metadata"]["labels"] = {}
    assert drifted(DESIRED, cur) == ["metadata.labels.app"]


def test_role_rules_edited_are_drift():
    role = {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    edited = {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}]}
    assert drifted(role, edited) == ["rules[0].verbs"]
    assert drifted(role, {"rules": []}) == ["rules"]
