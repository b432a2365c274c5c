"""TrainingJob -> the run config, an Indexed Job with one pod per worker, wired for torchrun
(world size, node rank from the completion index, master address `<job>-0.<service>`), the
headless Service that names the workers when there is more than one process, and an output PVC
unless the outputs go to the artifact store.

With an artifact store the model is published there and the checkpoints are kept there, so the
output directory is each pod's own emptyDir and no claim has to be provisioned and bound
before a run's pods can be scheduled (the largest cost of starting a run at scale)."""

from __future__ import annotations

from typing import Any

from tauon_operator import queueing
from tauon_operator.api import API_VERSION, TRAININGJOBS, TrainingJob, TrainingJobSpec
from tauon_operator.api.code import CODE_MOUNT
from tauon_operator.builders import access, pod
from tauon_operator.builders.dataset import DATA_MOUNT, claim_name
from tauon_operator.meta import PARENT_LABEL, child_name, object_meta, with_spec_hash
from tauon_operator.settings import Settings
from tauon_runtime.contract import PERMANENT_EXIT_CODES, TrainConfig
from tauon_runtime.contract.keys import (
    ATTEMPT_LABEL,
    ENV_ATTEMPT,
    ENV_CHECKPOINT_DIR,
    ENV_CONFIG_PATH,
    ENV_DATASET_DIR,
    ENV_OUTPUT_DIR,
    ENV_RUN_UID,
    ENV_WORKERS,
)

OUTPUT_MOUNT = "/output"
MODEL_SUBDIR = "model"


def service_name(tj: dict[str, Any]) -> str:
    return child_name(tj["metadata"]["name"], "workers")


def output_claim_name(tj: dict[str, Any]) -> str:
    return child_name(tj["metadata"]["name"], "output")


def outputs_to_store(spec: TrainingJobSpec, settings: Settings) -> bool:
    """The run's model and checkpoints go to the artifact store (one is configured, and the
    spec does not keep them on a claim with `output.store: pvc`)."""
    return spec.output.store == "default" and bool(settings.store_bucket)


def config_map_name(tj: dict[str, Any]) -> str:
    return child_name(tj["metadata"]["name"], "config")


def worker_job_name(tj: dict[str, Any], attempt: int) -> str:
    """One Job per attempt: a group restart replaces the Job, the checkpoints stay."""
    return child_name(tj["metadata"]["name"], f"a{attempt}")


def run_config(tj: dict[str, Any]) -> str:
    spec = TrainingJob.parse_spec(tj)
    fields = {f: getattr(spec, f) for f in TrainConfig.SPEC_FIELDS}
    # The model is named after the TrainingJob unless the spec names it: the name is part of
    # its key in the artifact store and of status.model.
    fields["output"] = spec.output.model_copy(
        update={"model_name": spec.output.model_name or tj["metadata"]["name"]}
    )
    cfg = TrainConfig(
        **fields,
        dataset_dir=DATA_MOUNT,
        output_dir=OUTPUT_MOUNT,
    )
    return cfg.model_dump_json(by_alias=True, exclude_none=True)


def command_args(
    workers: int, nproc: int, master: str, port: int, own: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """One process runs the runtime (or `own`, a TrainingJob's command and args) directly; more
    go through torchrun's static rendezvous."""
    if own is None:
        program = ["tauon-runtime", "train", "--config", pod.CONFIG_FILE]
        under_torchrun = ["-m", "tauon_runtime", *program[1:]]
    else:
        program, under_torchrun = own, ["--no-python", *own]
    if workers * nproc == 1:
        return program[:1], program[1:]
    return ["torchrun"], [
        f"--nnodes={workers}",
        f"--nproc-per-node={nproc}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        f"--master-port={port}",
        *under_torchrun,
    ]


def own_code_env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """What a TrainingJob's own command finds besides torchrun's variables: where the run
    config, the prepared data, the checkpoints and the output are (tauon_runtime.sdk reads
    them). One process is not started by torchrun, so its variables are set here."""
    if spec.command is None:
        return []
    single = spec.workers * spec.processes_per_worker == 1
    return [
        {"name": ENV_CONFIG_PATH, "value": pod.CONFIG_FILE},
        *([{"name": ENV_DATASET_DIR, "value": DATA_MOUNT}] if spec.dataset_ref else []),
        {"name": ENV_OUTPUT_DIR, "value": OUTPUT_MOUNT},
        {"name": ENV_CHECKPOINT_DIR, "value": f"{OUTPUT_MOUNT}/checkpoints"},
        *([{"name": "PYTHONPATH", "value": CODE_MOUNT}] if spec.code is not None else []),
        *(
            {"name": k, "value": "0" if k.endswith("RANK") else "1"}
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
            if single
        ),
    ]


def build(
    tj: dict[str, Any], settings: Settings, attempt: int, deadline_seconds: int | None = None
) -> list[dict[str, Any]]:
    """Every child for attempt `attempt`. `deadline_seconds` is what is left of the run's
    activeDeadlineSeconds, so a restarted group does not get a fresh deadline."""
    spec = TrainingJob.parse_spec(tj)
    name = tj["metadata"]["name"]
    svc = service_name(tj)
    job_name = worker_job_name(tj, attempt)
    master = f"{job_name}-0.{svc}"

    config = pod.config_map(object_meta(tj, config_map_name(tj), "trainer"), run_config(tj))
    to_store = outputs_to_store(spec, settings)
    claims = (
        [] if to_store else [pod.pvc(object_meta(tj, output_claim_name(tj), "output"), "1Gi", None)]
    )
    queue = queueing.queue_labels(tj)
    job_meta = object_meta(tj, job_name, "trainer", {ATTEMPT_LABEL: str(attempt), **queue})
    selector = {PARENT_LABEL["TrainingJob"]: name, "app.kubernetes.io/component": "trainer"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(tj, svc, "trainer"),
        "spec": {
            "clusterIP": "None",  # headless: each worker gets a stable DNS name
            "publishNotReadyAddresses": True,  # rendezvous happens before anyone is Ready
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": settings.master_port}],
        },
    }
    data = (
        [
            {
                "name": "data",
                "persistentVolumeClaim": {
                    "claimName": claim_name({"metadata": {"name": spec.dataset_ref.name}}),
                    "readOnly": True,
                },
            }
        ]
        if spec.dataset_ref
        else []
    )
    own = [*spec.command, *(spec.args or ())] if spec.command is not None else None
    command, args = command_args(
        spec.workers, spec.processes_per_worker, master, settings.master_port, own
    )
    env = [
        *access.status_env(API_VERSION, TRAININGJOBS, tj),
        {"name": ENV_WORKERS, "value": str(spec.workers)},
        {"name": ENV_ATTEMPT, "value": str(attempt)},
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(settings.master_port)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *(pod.store_env(settings) if to_store else []),
        *([{"name": ENV_RUN_UID, "value": tj["metadata"].get("uid", "")}] if to_store else []),
        *own_code_env(spec),
    ]
    container = pod.runtime_container(
        settings,
        "trainer",
        spec.image,
        args,
        env=env,
        resources=pod.compute_resources(
            str(spec.resources.cpu), str(spec.resources.memory), spec.resources.gpus
        ),
        volume_mounts=[
            *([{"name": "data", "mountPath": DATA_MOUNT, "readOnly": True}] if data else []),
            {"name": "output", "mountPath": OUTPUT_MOUNT},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "api-token", "mountPath": access.TOKEN_DIR, "readOnly": True},
            *([{"name": "code", "mountPath": CODE_MOUNT, "readOnly": True}] if spec.code else []),
        ],
    )
    container["command"] = command
    if spec.code is not None:
        container["workingDir"] = CODE_MOUNT
    container["ports"] = [{"name": "rendezvous", "containerPort": settings.master_port}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator restarts the whole group, not one worker
        "subdomain": svc,
        "serviceAccountName": access.service_account_name(tj),
        "automountServiceAccountToken": False,
        "securityContext": pod.pod_security_context(settings),
        "containers": [container],
        "volumes": [
            *pod.base_volumes(config_map_name(tj)),
            *data,
            {"name": "output", "emptyDir": {}}
            if to_store
            else {"name": "output", "persistentVolumeClaim": {"claimName": output_claim_name(tj)}},
            # DataLoader workers share tensors through /dev/shm; the default 64Mi is too small.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            access.token_volume(),
            *([spec.code.volume()] if spec.code else []),
        ],
        **pod.placement(settings, spec, spec.resources.gpus),
    }
    pod_labels = {k: v for k, v in job_meta["labels"].items() if k not in queue}
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.workers,
        "parallelism": spec.workers,
        "backoffLimit": 0,  # one failed worker fails the group; the operator decides to restart
        # A queued Job starts suspended, and Kueue resumes it when it admits the run (its
        # webhook would suspend it too); the operator never touches `suspend` on it again.
        "suspend": bool(spec.suspend) or bool(queue),
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": "trainer",
                        "operator": "In",
                        "values": list(PERMANENT_EXIT_CODES),
                    },
                },
            ]
        },
        # The queue labels stay on the Job: Kueue admits the Job, not each pod.
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, int(deadline_seconds))
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": job_spec}
    # A queued run that its user suspends gives its quota back: its Job goes (Kueue would
    # resume a suspended Job it has admitted) and comes back, queued again, on resume.
    workers = [] if queue and spec.suspend else [job]
    # One process has no rendezvous: the headless Service only names the workers to each other.
    services = [service] if spec.workers * spec.processes_per_worker > 1 else []
    children = [*access.runtime_access(tj, TRAININGJOBS), config, *services, *claims, *workers]
    return [with_spec_hash(c) for c in children]
