"""The names both sides must spell the same: exit codes, environment variables, annotations."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a runtime process ends. The operator turns 2 and 3 into a permanent failure (the
    Job's podFailurePolicy fails at once) and retries anything else from the last checkpoint."""

    OK = 0
    FAILED = 1  # anything unexpected: retried
    INVALID_CONFIG = 2  # the run config (the spec) cannot work: not retried
    REJECTED = 3  # train: below evaluation.minimum; serve: weights with another digest


PERMANENT_EXIT_CODES: tuple[int, ...] = (int(ExitCode.INVALID_CONFIG), int(ExitCode.REJECTED))

# Environment the operator sets and the runtime reads.
ENV_CONFIG_PATH = "TAUON_RUN_CONFIG"  # a run-config file (JSON or YAML)
ENV_CONFIG_JSON = "TAUON_RUN_CONFIG_JSON"  # or the run config inline
ENV_STATUS_TARGET = "TAUON_STATUS_TARGET"  # <group>/<version>/namespaces/<ns>/<plural>/<name>
ENV_STATUS_API_URL = "TAUON_STATUS_API_URL"  # overrides KUBERNETES_SERVICE_HOST/PORT
ENV_SERVICEACCOUNT_DIR = "TAUON_SERVICEACCOUNT_DIR"  # the projected token the runtime reports with
ENV_TERMINATION_LOG = "TAUON_TERMINATION_LOG"  # the result JSON, read back from the pod status
ENV_WORKERS = "TAUON_WORKERS"
# What a TrainingJob's own command finds (tauon_runtime.sdk reads them; so can any program).
ENV_DATASET_DIR = "TAUON_DATASET_DIR"  # the prepared Dataset, read-only
ENV_OUTPUT_DIR = "TAUON_OUTPUT_DIR"
ENV_CHECKPOINT_DIR = "TAUON_CHECKPOINT_DIR"  # kept across restarts (and in the store, if any)
ENV_ATTEMPT = "TAUON_ATTEMPT"

# Metadata keys on the objects the operator creates.
MODEL_DIGEST_ANNOTATION = "tauon.dev/model-digest"  # the sha256 a serving pod must load
CONFIG_HASH_ANNOTATION = "tauon.dev/config-hash"  # a serving pod's run config: a change rolls it
SPEC_HASH_ANNOTATION = "tauon.dev/spec-hash"  # what the operator last wanted a child to be
ATTEMPT_LABEL = "tauon.dev/attempt"  # which restart of a TrainingJob a worker pod belongs to
TRACK_LABEL = "tauon.dev/track"  # stable or canary

# The artifact store (object storage) the operator configures; the credentials come from a
# Secret as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (env secretKeyRef), never in a CR.
ENV_STORE_ENDPOINT = "TAUON_STORE_ENDPOINT"  # e.g. https://s3.eu-west-1.amazonaws.com; empty: AWS
ENV_STORE_BUCKET = "TAUON_STORE_BUCKET"
ENV_STORE_PREFIX = "TAUON_STORE_PREFIX"
ENV_STORE_REGION = "TAUON_STORE_REGION"
ENV_NAMESPACE = "TAUON_NAMESPACE"  # the pod's namespace (downward API): part of every store key
ENV_RUN_UID = "TAUON_RUN_UID"  # the TrainingJob's uid: its checkpoints' key in the store
STORE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def feedback_key(prefix: str, namespace: str, deployment: str) -> str:
    """Where one ModelDeployment's shared feedback lives in the store (no trailing slash): what
    the operator gives its servers, and where a Dataset built from the feedback reads it."""
    return "/".join(
        [*(p for p in prefix.strip("/").split("/") if p), namespace, "feedback", deployment]
    )
