"""Quantities and names, generated (hypothesis, fixed seed, bounded): for every value, the API
server (CEL `isQuantity`/`quantity()` for memory, the per-type checks of the untyped CPU field,
the root rules on metadata.name) and the operator's models accept or refuse it alike, so nothing
the server takes fails in the operator and nothing the operator could build is refused.

Each value goes to the real API server as a server-side dry run (nothing is stored).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from localkube.kubeapi import ApiError, KubeApi
from tauon_operator.api import Dataset, ModelDeployment, TrainingJob

pytestmark = pytest.mark.cluster

SUFFIXES = ["", "", "Ki", "Mi", "Gi", "Ti", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
            "K", "B", "i", "e3", "E-2", "e+1", "e", "e1.5"]
# Strings shaped like quantities (signs, zeros, fractions, every suffix, exponents) and noise.
QUANTITY_TEXT = st.builds(
    lambda sign, whole, dot, frac, suffix: f"{sign}{whole}{dot}{frac}{suffix}",
    st.sampled_from(["", "", "+", "-"]),
    st.sampled_from(["", "0", "00", "1", "2", "10", "007", "4096"]),
    st.sampled_from(["", "", "."]),
    st.sampled_from(["", "0", "5", "05", "25", "000"]),
    st.sampled_from(SUFFIXES),
)
NOISE = st.text(alphabet="0123456789.+-eEKMGTPimnuk x", max_size=6)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
)
ODD = st.one_of(st.booleans(), st.just([1]), st.just({"cores": 2}))
VALUES = st.one_of(QUANTITY_TEXT, QUANTITY_TEXT, NOISE, NUMBERS, ODD)
BOUNDED = settings(max_examples=400, derandomize=True, database=None, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def dry_run(cluster, crds):
    api = KubeApi(cluster.kubeconfig, keepalive=True)
    path = "/apis/tauon.dev/v1alpha1/namespaces/default/trainingjobs"

    def accepted(body: dict) -> bool:
        try:
            api.request("POST", path, body, params={"dryRun": "All", "fieldValidation": "Strict"})
            return True
        except ApiError as e:
            # 422: the schema said no; 400: strict decoding (an object where a scalar belongs
            # has unknown fields). Anything else is a bug.
            assert e.status == 422 or "strict decoding error" in e.body, e
            return False

    return accepted


def trainingjob(resources: dict) -> dict:
    return {"apiVersion": "tauon.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "quantity"},
            "spec": {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"},
                     "resources": resources}}


def models_accept(body: dict) -> bool:
    try:
        TrainingJob.parse(body)
        return True
    except ValidationError:
        return False


@pytest.mark.parametrize("field", ["memory", "cpu"])
def test_the_api_server_and_the_models_agree_on_every_quantity(dry_run, field):
    seen = {True: 0, False: 0}

    @BOUNDED
    @given(VALUES)
    def agree(value):
        body = trainingjob({field: value})
        server = dry_run(body)
        assert server == models_accept(body), (field, value, "accepted" if server else "refused")
        seen[server] += 1

    agree()
    assert min(seen.values()) >= 50, seen  # both sides of the line were exercised


# --- names -------------------------------------------------------------------------------------

SPECS = {
    "datasets": ("Dataset", {"source": {"builtin": {"name": "digits"}}}),
    "trainingjobs": ("TrainingJob", {"datasetRef": {"name": "d"}, "model": {"architecture": "cnn"}}),
    "modeldeployments": ("ModelDeployment", {"model": {"trainingJobRef": {"name": "t"}}}),
}
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Names around every limit: lengths up to 70, dots, dashes, a digit or a dash first.
NAMES = st.builds(lambda head, body: head + body,
                  st.sampled_from(["a", "z", "1", "-", "."]),
                  st.text(alphabet="abc019-.", min_size=0, max_size=69)) | st.builds(
    lambda n, c: c * n, st.integers(min_value=50, max_value=70), st.sampled_from(["a", "9"]))


@pytest.mark.parametrize("plural", SPECS)
def test_the_api_server_and_the_models_agree_on_every_name(cluster, crds, plural):
    api = KubeApi(cluster.kubeconfig, keepalive=True)
    kind, spec = SPECS[plural]
    model = {k.KIND: k for k in (Dataset, TrainingJob, ModelDeployment)}[kind]
    seen = {True: 0, False: 0}

    @BOUNDED
    @given(NAMES)
    def agree(name):
        body = {"apiVersion": "tauon.dev/v1alpha1", "kind": kind, "metadata": {"name": name},
                "spec": spec}
        try:
            api.request("POST", f"/apis/tauon.dev/v1alpha1/namespaces/default/{plural}", body,
                        params={"dryRun": "All"})
            server = True
        except ApiError as e:
            assert e.status == 422, e
            server = False
        ours = not model.NAME.messages(name)
        # The API server also asks for a DNS subdomain (the models leave that to it).
        assert server == (ours and bool(SUBDOMAIN.match(name)) and len(name) <= 253), name
        seen[server] += 1

    agree()
    assert min(seen.values()) >= 50, seen
