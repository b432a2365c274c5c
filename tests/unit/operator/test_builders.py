"""Builders are pure: a custom resource in, children out. Tables of spec -> objects."""

from __future__ import annotations

import json

import pytest

from tauon_operator.builders import dataset, modeldeployment, trainingjob
from tauon_operator.builders.modeldeployment import ResolvedModel, split_replicas
from tauon_operator.meta import SPEC_HASH, child_name
from tauon_operator.settings import Settings

S = Settings()


def cr(kind: str, name: str, spec: dict, ns: str = "ml") -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": 1},
            "spec": spec}


def tj(name="mnist", **spec) -> dict:
    return cr("TrainingJob", name, {"datasetRef": {"name": "digits"},
                                    "model": {"architecture": "cnn"}, **spec})


def by_kind(children: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in children:
        out.setdefault(c["kind"], []).append(c)
    return out


def all_pod_specs(children):
    for c in children:
        if c["kind"] in ("Job", "Deployment"):
            yield c["spec"]["template"]["spec"]


@pytest.mark.parametrize("parent,suffix,expected", [
    ("mnist", "a0", "mnist-a0"),
    ("x" * 70, "a0", None),
])
def test_child_names_are_deterministic_and_fit(parent, suffix, expected):
    name = child_name(parent, suffix)
    assert name == child_name(parent, suffix)
    assert len(name) <= 63 and name.endswith(suffix)
    if expected:
        assert name == expected


def test_every_child_is_owned_labelled_and_hashed():
    children = [*dataset.build(cr("Dataset", "digits", {"source": {"builtin": {"name": "digits"}}}), S),
                *trainingjob.build(tj(), S, 0),
                *modeldeployment.build(cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "mnist"}}}),
                                       S, ResolvedModel("mnist-output", "model", "a" * 64))]
    for c in children:
        meta = c["metadata"]
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "tauon"
        assert SPEC_HASH in meta["annotations"]
        assert meta["namespace"] == "ml"


def test_a_trainingjob_and_a_modeldeployment_of_one_name_share_no_child():
    # Users name both after the model; the two once wrote one `<name>-config` ConfigMap, and
    # the server started with the trainer's run config.
    md = cr("ModelDeployment", "digits", {"model": {"trainingJobRef": {"name": "digits"}},
                                          "canary": {"model": {"trainingJobRef": {"name": "other"}},
                                                     "trafficPercent": 20}})
    serving = modeldeployment.build(md, S, ResolvedModel("digits-output", "model", "a" * 64),
                                    canary_model=ResolvedModel("other", "model", "b" * 64))
    training = trainingjob.build(tj("digits", workers=2), S, 0)
    names = lambda children: {(c["kind"], c["metadata"]["name"]) for c in children}  # noqa: E731
    assert not names(serving) & names(training)


def test_a_dataset_and_a_trainingjob_of_one_name_share_no_child():
    # A closed-loop round is a Dataset and a TrainingJob both named <md>-retrain-<n>: with one
    # `<name>-runtime` identity, each rewrote the other's Role to its own object's status.
    preparing = dataset.build(cr("Dataset", "web-retrain-1", {"source": {"builtin": {"name": "digits"}}}), S)
    training = trainingjob.build(tj("web-retrain-1"), S, 0)
    names = lambda children: {(c["kind"], c["metadata"]["name"]) for c in children}  # noqa: E731
    assert not names(preparing) & names(training)
    accounts = {c["metadata"]["name"] for c in [*preparing, *training] if c["kind"] == "ServiceAccount"}
    assert accounts == {"web-retrain-1-prepare", "web-retrain-1-trainer"}


def test_every_pod_meets_the_restricted_profile():
    children = [*dataset.build(cr("Dataset", "d", {"source": {"builtin": {"name": "digits"}}}), S),
                *trainingjob.build(tj(workers=2, hyperparameters={"batchSize": 64}), S, 0),
                *modeldeployment.build(cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "x"}}}),
                                       S, ResolvedModel("x-output", "model", "a" * 64))]
    specs = list(all_pod_specs(children))
    assert len(specs) == 3
    allowed = {"configMap", "emptyDir", "persistentVolumeClaim", "projected"}
    for spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
        for v in spec["volumes"]:
            assert set(v) - {"name"} <= allowed


@pytest.mark.parametrize("workers,nproc,command,has_torchrun_args", [
    (1, 1, ["tauon-runtime"], False),
    (2, 1, ["torchrun"], True),
    (1, 4, ["torchrun"], True),
])
def test_launcher(workers, nproc, command, has_torchrun_args):
    spec = {"workers": workers, "processesPerWorker": nproc,
            "hyperparameters": {"batchSize": 8 * workers * nproc},
            "resources": {"gpus": nproc if nproc > 1 else 0}}
    job = by_kind(trainingjob.build(tj(**spec), S, 0))["Job"][0]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == command
    assert ("--node-rank=$(JOB_COMPLETION_INDEX)" in c["args"]) == has_torchrun_args
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    assert job["spec"]["completionMode"] == "Indexed"
    # One process has no rendezvous, so no headless Service to name the workers
    services = by_kind(trainingjob.build(tj(**spec), S, 0)).get("Service", [])
    assert len(services) == (0 if workers * nproc == 1 else 1)


def test_training_job_wiring():
    kids = by_kind(trainingjob.build(tj(workers=2, hyperparameters={"batchSize": 64},
                                        resources={"gpus": 4, "cpu": "8", "memory": "32Gi"},
                                        suspend=True, ttlSecondsAfterFinished=60,
                                        priorityClassName="high"), S, 3, deadline_seconds=90))
    job = kids["Job"][0]
    assert job["metadata"]["name"] == "mnist-a3"
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == "mnist-a3-0.mnist-workers"
    assert env["TAUON_STATUS_TARGET"] == "tauon.dev/v1alpha1/namespaces/ml/trainingjobs/mnist"
    assert pod["subdomain"] == "mnist-workers"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["priorityClassName"] == "high"
    assert job["spec"]["suspend"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 90
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["backoffLimit"] == 0
    assert kids["Service"][0]["spec"]["clusterIP"] == "None"
    config = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert config["datasetDir"] == "/data" and config["outputDir"] == "/output"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"data": "digits-data", "output": "mnist-output"}


def test_runtime_identity_is_limited_to_its_own_object():
    kids = by_kind(trainingjob.build(tj(), S, 0))
    [role] = kids["Role"]
    assert role["rules"] == [{"apiGroups": ["tauon.dev"], "resources": ["trainingjobs/status"],
                              "resourceNames": ["mnist"], "verbs": ["get", "patch"]}]
    assert kids["ServiceAccount"][0]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("total,percent,expected", [
    (4, None, (4, 0)),
    (4, 25, (3, 1)),
    (4, 10, (3, 1)),   # a canary asked for always gets a pod
    (1, 50, (1, 1)),   # the stable track keeps one too
    (10, 50, (5, 5)),
    (3, 100, (0, 3)),
    (4, 0, (4, 0)),
])
def test_canary_replica_split(total, percent, expected):
    assert split_replicas(total, percent) == expected


@pytest.mark.parametrize("uri,claim,subpath", [
    ("pvc://models/v2", "models", "v2"),
    ("pvc://models/synthetic/v2/model.safetensors", "models", "synthetic/v2"),
    ("pvc://models", "models", ""),
])
def test_model_uris(uri, claim, subpath):
    m = ResolvedModel.from_uri(uri, "a" * 64)
    assert (m.claim, m.subpath) == (claim, subpath)


@pytest.mark.parametrize("stable_format, canary_format", [
    (None, None), ("onnx", None), (None, "onnx"), ("onnx", "onnx"), ("safetensors", "onnx"),
])
def test_model_format_picks_the_backend_and_the_image_per_track(stable_format, canary_format):
    def source(job, fmt):
        return {"trainingJobRef": {"name": job}, **({"format": fmt} if fmt else {})}

    md = cr("ModelDeployment", "web", {"model": source("mnist", stable_format), "replicas": 2,
                                       "canary": {"model": source("v2", canary_format), "trafficPercent": 50}})
    kids = by_kind(modeldeployment.build(md, S, ResolvedModel("mnist-output", "model", "a" * 64),
                                         ResolvedModel("v2-output", "model", "b" * 64)))
    for deployment, config, fmt in zip(kids["Deployment"], kids["ConfigMap"], (stable_format, canary_format),
                                       strict=True):
        serve = json.loads(config["data"]["run.json"])
        assert serve["modelFormat"] == (fmt or "safetensors")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == (S.runtime_edge_image if fmt == "onnx" else S.runtime_image)
    assert S.runtime_edge_image != S.runtime_image


def test_an_image_override_wins_over_the_edge_image():
    md = cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "mnist"}, "format": "onnx"},
                                       "image": "registry.example/runtime:dev"})
    [deployment] = by_kind(modeldeployment.build(md, S, ResolvedModel("c", "m", "a" * 64)))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/runtime:dev"


def test_the_edge_image_comes_from_the_environment():
    assert Settings.from_env({"TAUON_RUNTIME_EDGE_IMAGE": "r.example/edge:1"}).runtime_edge_image == "r.example/edge:1"
    assert Settings.from_env({}).runtime_edge_image == "ghcr.io/tauon-dev/tauon-runtime-edge:0.1.0"


def test_unknown_model_uri_schemes_are_refused_clearly():
    with pytest.raises(ValueError, match="pvc://, s3:// and https://"):
        ResolvedModel.from_uri("gs://bucket/m.safetensors", "a" * 64)


STORE = Settings(store_endpoint="http://127.0.0.1:8333", store_bucket="models",
                 store_secret="tauon-store")
S3_MODEL = "s3://team-models/tauon/ml/models/mnist/" + "a" * 64 + "/"


@pytest.mark.parametrize("uri,bucket", [(S3_MODEL, "team-models"),
                                        ("https://models.example.com/mnist/v1/", None)])
def test_a_remote_model_is_fetched_and_verified_before_the_server_starts(uri, bucket):
    md = cr("ModelDeployment", "web", {"model": {"uri": uri, "sha256": "a" * 64}})
    kids = by_kind(modeldeployment.build(md, STORE, ResolvedModel.from_uri(uri, "a" * 64)))
    pod = kids["Deployment"][0]["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "storage-initializer"
    assert init["args"] == ["fetch", "--uri", uri, "--sha256", "a" * 64, "--dest", "/models/model"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    model = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model == {"name": "model", "emptyDir": {}}  # no claim: any namespace, any node
    env = {e["name"]: e for e in init["env"]}
    if bucket:
        assert env["TAUON_STORE_BUCKET"]["value"] == bucket  # the URI's bucket, not the default
        assert env["TAUON_STORE_ENDPOINT"]["value"] == "http://127.0.0.1:8333"
        # credentials by reference only: never a value in the spec
        assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
            "secretKeyRef": {"name": "tauon-store", "key": "AWS_SECRET_ACCESS_KEY"}}}
    else:
        assert not any(k.startswith(("TAUON_STORE", "AWS_")) for k in env)
    serve = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert (serve["modelDir"], serve["expectedSha256"]) == ("/models/model", "a" * 64)
    assert not any(m["name"] == "model" for m in init["volumeMounts"] if m.get("readOnly"))
    [server] = pod["containers"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]


def test_every_component_publishes_to_the_store_only_when_one_is_configured():
    def store_env(children):
        return {e["name"] for spec in all_pod_specs(children) for c in spec["containers"]
                for e in c.get("env", []) if e["name"].startswith("TAUON_STORE")}

    ds = cr("Dataset", "d", {"source": {"builtin": {"name": "digits"}}})
    assert store_env(dataset.build(ds, S)) == set()
    assert "TAUON_STORE_BUCKET" in store_env(dataset.build(ds, STORE))
    assert "TAUON_STORE_BUCKET" in store_env(trainingjob.build(tj(), STORE, 0))
    # output.store: pvc keeps the model on the output claim even where a store is configured
    assert store_env(trainingjob.build(tj(output={"store": "pvc"}), STORE, 0)) == set()
    run = json.loads(by_kind(trainingjob.build(tj(), STORE, 0))["ConfigMap"][0]["data"]["run.json"])
    assert run["output"]["modelName"] == "mnist"  # the model is named after its TrainingJob


def test_with_a_store_a_run_has_no_output_claim_and_its_checkpoints_key_is_its_uid():
    kids = by_kind(trainingjob.build(tj(), STORE, 0))
    assert "PersistentVolumeClaim" not in kids  # nothing to provision and bind before the pods
    spec = kids["Job"][0]["spec"]["template"]["spec"]
    assert {"name": "output", "emptyDir": {}} in spec["volumes"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["TAUON_RUN_UID"] == "uid-mnist"
    # Kept on a claim (output.store: pvc, or no store): the claim, and no uid to key a store by.
    for children in (trainingjob.build(tj(output={"store": "pvc"}), STORE, 0),
                     trainingjob.build(tj(), S, 0)):
        kids = by_kind(children)
        assert [c["metadata"]["name"] for c in kids["PersistentVolumeClaim"]] == ["mnist-output"]
        env = {e["name"] for e in kids["Job"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "TAUON_RUN_UID" not in env


def test_claims_ask_only_for_what_block_storage_offers():
    children = [*dataset.build(cr("Dataset", "d", {"source": {"builtin": {"name": "digits"}}}), S),
                *trainingjob.build(tj(workers=2), S, 0),
                *modeldeployment.build(
                    cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "x"}},
                                                  "feedback": {"enabled": True}}),
                    S, ResolvedModel("x-output", "model", "a" * 64))]
    claims = by_kind(children)["PersistentVolumeClaim"]
    assert len(claims) == 3
    assert all(c["spec"]["accessModes"] == ["ReadWriteOnce"] for c in claims)


def test_model_deployment_children():
    md = cr("ModelDeployment", "web", {
        "model": {"trainingJobRef": {"name": "mnist"}}, "replicas": 4,
        "canary": {"model": {"trainingJobRef": {"name": "v2"}}, "trafficPercent": 25},
        "feedback": {"enabled": True}})
    kids = by_kind(modeldeployment.build(md, S, ResolvedModel("mnist-output", "model", "a" * 64),
                                         ResolvedModel("v2-output", "model", "b" * 64)))
    stable, canary = kids["Deployment"]
    assert (stable["metadata"]["name"], stable["spec"]["replicas"]) == ("web", 3)
    assert (canary["metadata"]["name"], canary["spec"]["replicas"]) == ("web-canary", 1)
    assert stable["spec"]["template"]["metadata"]["annotations"]["tauon.dev/model-digest"] == "a" * 64
    assert canary["spec"]["template"]["metadata"]["annotations"]["tauon.dev/model-digest"] == "b" * 64
    assert stable["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = stable["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "$(POD_IP)" in pod["containers"][0]["args"]
    serve = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert serve["expectedSha256"] == "a" * 64
    assert serve["feedbackPath"] == "/feedback/feedback.jsonl"
    # The Service fronts the stable pods; they forward exactly 25 % to the canary's own Service.
    services = {svc["metadata"]["name"]: svc["spec"] for svc in kids["Service"]}
    assert services["web"]["selector"] == {"tauon.dev/modeldeployment": "web", "tauon.dev/track": "stable"}
    assert services["web-canary"]["selector"] == {"tauon.dev/modeldeployment": "web",
                                                  "tauon.dev/track": "canary"}
    assert services["web-canary"]["ports"][0]["port"] == 8080
    assert serve["canary"] == {"url": "http://web-canary.ml.svc.cluster.local:8080", "trafficPercent": 25}
    assert "canary" not in json.loads(kids["ConfigMap"][1]["data"]["run.json"])
    hashes = {d["spec"]["template"]["metadata"]["annotations"]["tauon.dev/config-hash"]
              for d in kids["Deployment"]}
    assert len(hashes) == 2  # a change of either track's run config rolls that track
    assert "HorizontalPodAutoscaler" not in kids
    assert kids["PersistentVolumeClaim"][0]["metadata"]["name"] == "web-feedback"


def test_feedback_goes_to_the_store_when_one_is_configured_with_no_claim():
    md = cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "mnist"}}, "replicas": 3,
                                       "feedback": {"enabled": True, "retentionDays": 7}})
    kids = by_kind(modeldeployment.build(md, STORE, ResolvedModel("mnist-output", "model", "a" * 64)))
    assert "PersistentVolumeClaim" not in kids
    serve = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert serve["feedbackKey"] == "tauon/ml/feedback/web" and "feedbackPath" not in serve
    assert serve["feedback"] == {"enabled": True, "retentionDays": 7}
    pod = kids["Deployment"][0]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["TAUON_STORE_BUCKET"]["value"] == "models"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # by reference to the Secret only
    assert all(v["name"] != "feedback" for v in pod["volumes"])
    # Without feedback a store-backed deployment gets no store credentials at all.
    plain = cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "mnist"}}})
    pod = by_kind(modeldeployment.build(plain, STORE, ResolvedModel("mnist-output", "model", "a" * 64))
                  )["Deployment"][0]["spec"]["template"]["spec"]
    assert not {"TAUON_STORE_BUCKET", "AWS_SECRET_ACCESS_KEY"} & {e["name"] for e in pod["containers"][0]["env"]}


def test_autoscaling_leaves_replicas_to_the_hpa():
    md = cr("ModelDeployment", "web", {"model": {"trainingJobRef": {"name": "m"}},
                                       "autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    kids = by_kind(modeldeployment.build(md, S, ResolvedModel("m-output", "model", "a" * 64)))
    assert "replicas" not in kids["Deployment"][0]["spec"]
    hpa = kids["HorizontalPodAutoscaler"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)


def test_the_operators_flags_keep_every_setting_from_the_environment():
    import argparse

    from tauon_operator.main import settings_for

    env = Settings.from_env({"TAUON_STORE_BUCKET": "models", "TAUON_STORE_SECRET": "tauon-store",
                             "TAUON_RUNTIME_EDGE_IMAGE": "r.example/edge:1"})
    got = settings_for(argparse.Namespace(namespace=["a"], metrics_port=0, health_port=None), env)
    assert (got.store_bucket, got.store_secret, got.runtime_edge_image) == (
        "models", "tauon-store", "r.example/edge:1")
    assert (got.namespaces, got.metrics_port, got.health_port) == (("a",), 0, env.health_port)


def test_a_feedback_dataset_prepares_from_the_base_version_and_the_deployments_feedback():
    ds = cr("Dataset", "digits-fb", {"source": {"feedback": {"modelDeploymentRef": {"name": "web"},
                                                              "baseDatasetRef": {"name": "digits"}}}})
    base = dataset.BaseVersion("s3://models/tauon/ml/datasets/digits/" + "d" * 64 + "/", "sha256:" + "d" * 64)
    kids = by_kind(dataset.build(ds, STORE, base))
    cfg = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert (cfg["baseLocation"], cfg["baseDigest"]) == (base.location, base.digest)
    assert cfg["feedbackKey"] == "tauon/ml/feedback/web"
    env = {e["name"] for e in kids["Job"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"TAUON_STORE_BUCKET", "AWS_ACCESS_KEY_ID"} <= env


def test_an_all_canary_rollout_is_fronted_by_the_canary_pods_and_forwards_nothing():
    md = cr("ModelDeployment", "web", {
        "model": {"trainingJobRef": {"name": "mnist"}}, "replicas": 2,
        "canary": {"model": {"trainingJobRef": {"name": "v2"}}, "trafficPercent": 100}})
    kids = by_kind(modeldeployment.build(md, S, ResolvedModel("mnist-output", "model", "a" * 64),
                                         ResolvedModel("v2-output", "model", "b" * 64)))
    services = {svc["metadata"]["name"]: svc["spec"] for svc in kids["Service"]}
    assert services["web"]["selector"]["tauon.dev/track"] == "canary"
    assert all("canary" not in json.loads(c["data"]["run.json"]) for c in kids["ConfigMap"])


# --- a team's own code -------------------------------------------------------------------------


def own(name="gan", **spec) -> dict:
    return cr("TrainingJob", name, {"command": ["python", "train.py"], "args": ["--latent", "32"],
                                    "code": {"configMap": {"name": "gan-code"}}, **spec})


def test_own_code_runs_its_command_with_the_contract_around_it():
    kids = by_kind(trainingjob.build(own(datasetRef={"name": "digits"}), S, 0))
    pod = kids["Job"][0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert (c["command"], c["args"]) == (["python"], ["train.py", "--latent", "32"])
    assert c["workingDir"] == "/code"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TAUON_RUN_CONFIG"] == "/etc/tauon/run.json"  # what tauon_runtime.sdk reads
    assert (env["TAUON_DATASET_DIR"], env["TAUON_OUTPUT_DIR"]) == ("/data", "/output")
    assert env["TAUON_CHECKPOINT_DIR"] == "/output/checkpoints" and env["PYTHONPATH"] == "/code"
    # one process is not started by torchrun: its variables are set for it
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("0", "1", "0", "1")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["code"] == {"name": "code", "mountPath": "/code", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["code"]["configMap"] == {"name": "gan-code"}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "digits-data"
    config = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert "model" not in config and config["output"]["modelName"] == "gan"
    # the exit codes of a gate miss (3) and of a bad invocation (2) are not retried
    rule = kids["Job"][0]["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2, 3]


def test_own_code_on_several_processes_goes_through_torchrun_without_python():
    job = by_kind(trainingjob.build(own(workers=2, hyperparameters={"batchSize": 64}), S, 0))["Job"][0]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["torchrun"]
    assert c["args"][c["args"].index("--no-python"):] == ["--no-python", "python", "train.py", "--latent", "32"]
    env = {e["name"] for e in c["env"]}
    assert "RANK" not in env  # torchrun sets them per process


def test_own_code_without_a_dataset_mounts_none():
    spec = {"command": ["python", "-m", "policy"],
            "code": {"persistentVolumeClaim": {"claimName": "team-code"}}}
    pod = by_kind(trainingjob.build(cr("TrainingJob", "rl", spec), S, 0))["Job"][0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "data" not in {m["name"] for m in c["volumeMounts"]}
    assert "TAUON_DATASET_DIR" not in {e["name"] for e in c["env"]}
    code = next(v for v in pod["volumes"] if v["name"] == "code")
    assert code["persistentVolumeClaim"] == {"claimName": "team-code", "readOnly": True}


def test_a_predictor_class_is_mounted_and_named_in_the_serve_config():
    md = cr("ModelDeployment", "gan", {"model": {"trainingJobRef": {"name": "gan"}},
                                       "predictor": {"className": "predictor:Generator",
                                                     "code": {"configMap": {"name": "gan-code"}}}})
    kids = by_kind(modeldeployment.build(md, S, ResolvedModel("gan-output", "model", "a" * 64)))
    pod = kids["Deployment"][0]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["code"]["mountPath"] == "/code" and mounts["code"]["readOnly"] is True
    assert {"name": "code", "configMap": {"name": "gan-code"}} in pod["volumes"]
    config = json.loads(kids["ConfigMap"][0]["data"]["run.json"])
    assert config["predictor"] == {"className": "predictor:Generator", "codeDir": "/code"}
