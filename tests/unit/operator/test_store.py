"""The informer cache keeps what reconciles read, in as little memory as it can."""

import json

from tauon_operator.store import Store


def _job(name: str, rv: int) -> dict:
    # Decoded separately, as two watch events are: no string object is shared between them.
    return json.loads(json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv),
                     "labels": {"tauon.dev/trainingjob": name, "app.kubernetes.io/managed-by": "tauon"},
                     "managedFields": [{"manager": "tauon", "operation": "Apply"}]},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "tauon/runtime:0.1",
                                                        "env": [{"name": "X", "value": "y" * 200}]}]}}},
        "status": {"active": 1},
    }))


def test_the_cached_copy_is_the_object_without_managed_fields():
    store = Store()
    body = _job("a", 1)
    assert store.observe("Job", "ADDED", body)
    cached = store.get("Job", "ns", "a")
    expected = {**body, "metadata": {k: v for k, v in body["metadata"].items() if k != "managedFields"}}
    assert cached == expected
    assert store.select("Job", "ns", {"tauon.dev/trainingjob": "a"}) == [cached]


def test_a_pods_spec_is_not_kept():
    store = Store()
    store.observe("Pod", "ADDED", {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "1"},
                                   "spec": {"containers": []}, "status": {"phase": "Running"}})
    assert store.get("Pod", "ns", "p") == {"metadata": {"name": "p", "namespace": "ns",
                                                        "resourceVersion": "1"},
                                           "status": {"phase": "Running"}}


def test_cached_objects_share_their_keys_and_short_values():
    store = Store()
    store.observe("Job", "ADDED", _job("a", 1))
    store.observe("Job", "ADDED", _job("b", 2))
    a, b = store.get("Job", "ns", "a"), store.get("Job", "ns", "b")
    key_a = next(k for k in a["spec"]["template"] if k == "spec")
    key_b = next(k for k in b["spec"]["template"] if k == "spec")
    assert key_a is key_b
    image = lambda o: o["spec"]["template"]["spec"]["containers"][0]["image"]  # noqa: E731
    assert image(a) is image(b)
    long_a = a["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    long_b = b["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    assert long_a == long_b and long_a is not long_b  # long strings are not worth a lookup
