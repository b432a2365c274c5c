"""`make demo`: Tauon doing its job on this machine, from data to predictions.

Starts a real Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler)
with kwok simulating four GPU nodes and a local node agent that runs pods as processes here;
installs the CRDs and starts the operator; applies an example directory (`make demo
EXAMPLE=examples/<dir>`, default examples/digits: a Dataset of the bundled handwritten digits, a
TrainingJob with the seed CNN, a ModelDeployment following it) and shows what happens, up to
real predictions on the Dataset's test split and a line of feedback. The cluster keeps running
afterwards so you can look around; `make cluster-down` stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import localplatform
from localkube import Cluster, ClusterError
from localkube.cluster import tool
from localplatform import REPO, ready_endpoints, volume_dir, wait

STATE = REPO / ".tauon" / "cluster"
NS = "default"
BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{OFF}", flush=True)


def status(cluster: Cluster, kind: str, name: str, ns: str = NS) -> dict:
    res = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(res.stdout).get("status") or {} if res.returncode == 0 else {}


def ready_reason(st: dict) -> str:
    c = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    return f"{c.get('reason', '')}: {c.get('message', '')}"


def settle(cluster: Cluster, kind: str, name: str, want: str, timeout: float = 300,
           ns: str = NS) -> dict | None:
    """Waits for `want` or Failed; says why on failure."""
    st = wait(lambda: (s := status(cluster, kind, name, ns)).get("phase") in (want, "Failed") and s,
              timeout, f"{kind} {name}", cluster=cluster)
    if st["phase"] != want:
        print(f"  {kind} {name} {st['phase']}: {ready_reason(st)}")
        return None
    return st


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def follow_training(cluster: Cluster, name: str, timeout: float = 900) -> dict:
    """Streams the trainer's log (`kubectl logs -f`, served by the node agent) and prints one
    line per epoch from the runtime's JSON events; returns the TrainingJob's final status."""
    def running_pod():
        pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-l", f"tauon.dev/trainingjob={name}",
                                          "-o", "json").stdout)["items"]
        return next((p["metadata"]["name"] for p in pods
                     if p["status"].get("phase") in ("Running", "Succeeded", "Failed")), None)

    pod = wait(running_pod, 300, "the trainer pod", cluster=cluster)
    logs = subprocess.Popen([tool("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "logs", "-f",
                             pod, "-n", NS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in logs.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "epoch":
            m, pct = event.get("metrics") or {}, event.get("percent") or 0
            bar = "#" * int(pct / 5) + "." * (20 - int(pct / 5))
            if "trainLoss" in m:  # the built-in loop's
                shown = (f"train loss {m.get('trainLoss', 0):.3f}  val loss {m.get('loss', 0):.3f}  "
                         f"val acc {m.get('accuracy', 0):.3f}")
            else:  # own code's, as it reported them
                shown = "  ".join(f"{k} {v:.3f}" for k, v in m.items())
            print(f"  epoch {event['epoch']:>2}/{event['totalEpochs']} [{bar}] {pct:5.1f}%  "
                  f"{shown}  eta {event.get('etaSeconds') or 0:.0f}s", flush=True)
        elif event.get("event") in ("evaluation", "exported"):
            print(f"  {DIM}{event['event']}: "
                  f"{json.dumps({k: v for k, v in event.items() if k not in ('event', 'time')})}{OFF}")
    logs.wait()
    return wait(lambda: (s := status(cluster, "tj", name)).get("phase") in ("Succeeded", "Failed") and s,
                timeout, "the TrainingJob to finish", cluster=cluster)


def example_objects(example: Path) -> dict[str, dict[str, dict]]:
    """The example's objects by kind and name, in file order."""
    import yaml

    objects: dict[str, dict[str, dict]] = {"Dataset": {}, "TrainingJob": {}, "ModelDeployment": {}}
    for path in sorted(example.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj and obj.get("kind") in objects:
                objects[obj["kind"]][obj["metadata"]["name"]] = obj
    return objects


def request_for(manifest: dict, x) -> dict:
    """A request as a user would write it: a JSON row of named features, the text, or the
    pixels."""
    if manifest.get("task") == "tabular-classification":
        return {"features": {f: round(float(v), 4) for f, v in zip(manifest["features"], x.ravel())}}
    if manifest.get("task") == "text-classification":  # the review again, from its token ids
        from tauon_runtime.tasks.text import load_tokenizer

        ids = [int(i) for i in x.ravel() if i]
        return {"text": load_tokenizer(manifest["tokenizer"]).decode(ids)}
    return {"instances": [x.tolist()]}


def predict_test_split(cluster: Cluster, ds: dict, endpoint: str):
    from safetensors.numpy import load_file  # the test split, exactly as the Dataset stored it

    data = volume_dir(cluster, NS, ds["claimName"])
    manifest = json.loads((data / "manifest.json").read_text())
    test = load_file(str(data / manifest["path"] / "test.safetensors"))
    classes = manifest["classes"]
    n = min(8, len(test["y"]))
    shown, first = 0, None
    for i in sorted({round(k * (len(test["y"]) - 1) / max(n - 1, 1)) for k in range(n)}):
        x, y = test["x"][i], int(test["y"][i])
        body = request_for(manifest, x)
        if i == 0:
            print(f"  {DIM}POST /v1/predict {json.dumps(body)[:160]}{OFF}")
        answer = post(f"http://{endpoint}/v1/predict", body)["predictions"][0]
        first = first or (answer, classes[y])
        ok = "ok " if answer["label"] == classes[y] else "MISS"
        shown += answer["label"] == classes[y]
        print(f"  {ok} true {classes[y]}  predicted {answer['label']}  (score {answer['score']:.3f})")
    print(f"  {shown}/{n} correct")
    return first


def ask_predictor(endpoint: str, request: Path) -> None:
    """The example's request.json, and the answer (long strings, such as a PNG, shortened)."""
    body = json.loads(request.read_text())
    print(f"  {DIM}POST /v1/predict {json.dumps(body)[:160]}{OFF}")
    for p in post(f"http://{endpoint}/v1/predict", body)["predictions"]:
        out = p["output"]
        if isinstance(out, dict):
            out = {k: (v[:24] + f"… ({len(v)} chars)" if isinstance(v, str) and len(v) > 40
                       else "[…]" if isinstance(v, list) else v) for k, v in out.items()}
        print(f"  {p['predictionId']}  {json.dumps(out, ensure_ascii=False)}")
        for row in p["output"].get("pixels") or [] if isinstance(p["output"], dict) else []:
            print("      " + "".join(" .:-=+*#%@"[min(9, int(v) // 26)] * 2 for v in row))


def model_deployment(name: str, uri: str, sha256: str) -> str:
    return json.dumps({"apiVersion": "tauon.dev/v1alpha1", "kind": "ModelDeployment",
                       "metadata": {"name": name},
                       "spec": {"model": {"uri": uri, "sha256": sha256},
                                "resources": {"cpu": "100m", "memory": "1Gi"}}})


def models_travel(cluster: Cluster, model: dict, ds: dict | None) -> bool:
    """The version in the artifact store served from another namespace by its s3:// URI, and a
    tampered copy refused with the checksum reason."""
    team, name = "team-b", model.get("name") or "model"
    step(f"the model travels: namespace {team} serves the same version by its s3:// URI")
    if cluster.kubectl("get", "namespace", team, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", team)
    wait(lambda: cluster.kubectl("get", "sa", "default", "-n", team, check=False).returncode == 0,
         30, f"the default ServiceAccount in {team}", cluster=cluster)
    localplatform.grant_store(cluster, team)
    print(f"  {DIM}model.uri: {model['location']}  sha256: {model['sha256']}{OFF}")
    cluster.kubectl("apply", "-n", team, "-f", "-",
                    input=model_deployment(name, model["location"], model["sha256"]))
    if not (md := settle(cluster, "mdep", name, "Ready", ns=team)):
        return False
    endpoint = wait(lambda: ready_endpoints(cluster, team, name), 60, "a ready endpoint")[0]
    print(f"  Ready in {team}: the storage initializer fetched and verified every file; "
          f"model {md['modelDigest'][:16]}…, pod {endpoint}")
    if ds is not None:
        predict_test_split(cluster, ds, endpoint)

    step("a tampered copy of that version (one bit of the weights flipped) is refused")
    bad = localplatform.tampered_copy(cluster, model["location"], f"tampered-{name}")
    t0 = time.monotonic()
    cluster.kubectl("apply", "-n", team, "-f", "-",
                    input=model_deployment("tampered", bad, model["sha256"]))
    st = settle(cluster, "mdep", "tampered", "Failed", timeout=60, ns=team)
    if st is None:
        return False
    print(f"  Failed after {time.monotonic() - t0:.0f}s — {ready_reason(st)}")
    return True


def closed_loop_walk(cluster: Cluster, name: str) -> bool:
    """A ModelDeployment that retrains: simulated users, two rounds (hack/closed_loop.py)."""
    import closed_loop

    step(f"the closed loop: users call {name} and send feedback; the operator retrains, gates, "
         "canaries and promotes (`kubectl get mdep -w` shows it too)")
    out = closed_loop.walk(cluster, NS, name, say=lambda line: print(f"  {line}", flush=True))
    failed = len(out["traffic1"].failed) + len(out.get("traffic2", closed_loop.Traffic()).failed)
    step("the loop, as the status tells it (status.models)")
    for v in out["status"].get("models") or []:
        live = f", live {v['liveAccuracy']:.3f} on {v['liveFeedback']}" if v.get("liveAccuracy") is not None else ""
        test = f"test {v['testAccuracy']:.3f}" if v.get("testAccuracy") is not None else "test ?"
        print(f"  {v['state']:<9} {v['digest'][:12]}  {v.get('trainingJob') or '-':<22} "
              f"{test}{live}  ({v.get('reason') or ''})")
    print(f"  held-out accuracy {out['before']:.3f} -> {out['after']:.3f}; "
          f"{failed} failed requests; {out['seconds']:.0f}s")
    return out["round1"]["decision"] == "Promoted" and not failed


def main(example: Path = REPO / "examples" / "digits") -> int:
    t0 = time.monotonic()
    if (STATE / "cluster.json").exists() and Cluster.attach(STATE).info.get("pids"):
        step("stopping the cluster left by an earlier demo")
        Cluster.attach(STATE).stop()
    step("starting Kubernetes on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager, "
         "kube-scheduler, kwok (4 simulated GPU nodes) and a local node agent; then Tauon's "
         "CRDs and operator")
    try:
        cluster = localplatform.start(STATE)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"up in {time.monotonic() - t0:.0f}s at {cluster.server}")
    print(cluster.kubectl("get", "nodes", "-o", "custom-columns=NODE:.metadata.name,"
                          "GPUS:.status.allocatable.nvidia\\.com/gpu,CPU:.status.allocatable.cpu,"
                          "TAINTS:.spec.taints[*].key").stdout)

    objects = example_objects(example)
    rel = example.relative_to(REPO) if example.is_relative_to(REPO) else example
    # An example with code brings it as a ConfigMap through kustomize (its kustomization.yaml).
    how = "-k" if (example / "kustomization.yaml").exists() else "-f"
    step(f"kubectl apply {how} {rel}/")
    print(cluster.kubectl("apply", "-n", NS, how, str(example)).stdout.strip())

    datasets = {}
    for name in objects["Dataset"]:
        step(f"the Dataset {name}: a prepare Job fetches, splits and describes the data")
        if not (ds := settle(cluster, "tds", name, "Ready")):
            return 1
        datasets[name] = ds
        counts = ds.get("counts") or {}
        print(f"  Ready: {counts.get('train')} train / {counts.get('validation')} validation / "
              f"{counts.get('test')} test samples, {len(ds.get('classes') or [])} classes, "
              f"digest {ds.get('digest')}")
        if ds.get("location"):
            print(f"  published to the artifact store: {ds['location']}")

    models = {}
    for name, tj_obj in objects["TrainingJob"].items():
        spec = tj_obj["spec"]
        what = (spec["model"]["architecture"] if spec.get("model")
                else f"its own code (`{' '.join(spec['command'])}`, tauon_runtime.sdk)")
        step(f"the TrainingJob {name}: {what} trains in a pod on the node agent (its log, live)")
        tj = follow_training(cluster, name)
        if tj["phase"] != "Succeeded":
            print(f"  TrainingJob {tj['phase']}: {ready_reason(tj)}")
            return 1
        model = models[name] = tj.get("model") or {}
        metrics = model.get("metrics") or {}
        shown = (f"test accuracy {metrics['accuracy']:.4f}" if "accuracy" in metrics
                 else ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        print(f"  Succeeded: {shown}; model {model.get('location')} sha256 {model.get('sha256')}")

    # The console's pod starts once training is done: the digits trainer asks for both of the
    # node agent's CPUs, and the console's 50m kept it Pending.
    step("the console: its own pod, with read-only RBAC")
    console = localplatform.start_console(cluster, NS)
    print(f"  {console}/?namespace={NS}")

    for name, md_obj in objects["ModelDeployment"].items():
        step(f"the ModelDeployment {name}: serving that model, Ready when every replica has its digest")
        if not (md := settle(cluster, "mdep", name, "Ready")):
            return 1
        endpoint = wait(lambda: ready_endpoints(cluster, NS, name), 60, "a ready endpoint")[0]
        print(f"  Ready: {md['replicas']['ready']} replica(s), model {md['modelDigest'][:16]}…, "
              f"{md['url']} → pod {endpoint}")
        if md_obj["spec"].get("retraining"):
            if not closed_loop_walk(cluster, name):
                return 1
            continue
        if md_obj["spec"].get("predictor"):
            step(f"a request through the predictor class {md_obj['spec']['predictor']['className']}")
            ask_predictor(endpoint, example / "request.json")
            continue
        tj_name = md_obj["spec"]["model"].get("trainingJobRef", {}).get("name")
        ds_name = objects["TrainingJob"].get(tj_name, {}).get("spec", {}).get("datasetRef", {}).get("name")
        if ds_name not in datasets:
            continue
        step("predictions on held-out samples (the Dataset's test split), through the served model")
        first = predict_test_split(cluster, datasets[ds_name], endpoint)
        if (md_obj["spec"].get("feedback") or {}).get("enabled") and first:
            step("feedback: telling the model the true label of one prediction")
            answer, truth = first
            print("  " + json.dumps(post(f"http://{endpoint}/v1/feedback",
                                         {"predictionId": answer["predictionId"], "label": truth})))
            with urllib.request.urlopen(f"http://{endpoint}/v1/feedback/stats", timeout=30) as r:
                stats = json.loads(r.read())
            where = (f"s3://{cluster.object_store.bucket}/tauon/{NS}/feedback/{name}/"
                     if cluster.object_store is not None else f"claim {name}-feedback")
            print(f"  the feedback store ({where}) now holds {stats['total']} record(s), "
                  f"accuracy on feedback {stats['accuracy']}")
            counted = wait(lambda: status(cluster, "mdep", name).get("feedbackCount"), 30,
                           "status.feedbackCount")
            print(f"  status.feedbackCount: {counted}")

    # The travelling model is a built-in one: own code's needs its predictor class to be served.
    stored = next((m for n, m in models.items() if str(m.get("location")).startswith("s3://")
                   and objects["TrainingJob"][n]["spec"].get("model")), None)
    if stored and cluster.object_store is not None:
        ds_name = next(iter(datasets), None)
        if not models_travel(cluster, stored, datasets.get(ds_name)):
            return 1

    step(f"done in {time.monotonic() - t0:.0f}s — the cluster keeps running:")
    print(cluster.kubectl("get", "tauon", "-n", NS).stdout)
    print(f"  the console: {console}/?namespace={NS}")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    tj = next(iter(objects["TrainingJob"]), "NAME")
    print(f"  kubectl get tauon; kubectl describe tj {tj}; kubectl logs job/{tj}-a0")
    print("  make cluster-down    # stop it all")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO / "examples" / "digits"))
