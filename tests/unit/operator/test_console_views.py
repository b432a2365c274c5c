"""The console's pages as pure functions of the objects: what each shows, escaped, and the
plots' points."""

from __future__ import annotations

from datetime import UTC, datetime

from tauon_operator.console import views

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def obj(kind: str, name: str, status: dict, **spec) -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ml",
                                       "creationTimestamp": "2026-12-07T11:58:30Z"},
            "spec": spec, "status": status}


def test_the_overview_row_of_each_kind():
    rows = views.overview_rows({
        "Dataset": [obj("Dataset", "digits", {"phase": "Ready", "digest": "ab" * 32, "counts": {"total": 1797}})],
        "TrainingJob": [obj("TrainingJob", "cnn", {"phase": "Running",
                                                   "progress": {"percent": 40.0, "epoch": 6, "totalEpochs": 15},
                                                   "metrics": {"latest": {"accuracy": 0.91}}})],
        "ModelDeployment": [obj("ModelDeployment", "web", {"phase": "Ready", "replicas": {"ready": 2, "desired": 2},
                                                           "feedbackCount": 7, "feedbackAccuracy": 0.857})],
    }, NOW)
    assert '<a href="/datasets/ml/digits">digits</a>' in rows and "1797 samples" in rows
    assert "digest abababababab" in rows
    assert "40 % (epoch 6/15)" in rows and "accuracy 0.91" in rows
    assert "2/2 ready" in rows and "7 feedback, accuracy 0.857" in rows
    assert rows.count("<td>1m</td>") == 3  # created 90 s before


def test_text_from_objects_is_escaped():
    rows = views.overview_rows({"Dataset": [obj("Dataset", "x", {"phase": "<script>alert(1)</script>"})]}, NOW)
    assert "<script>" not in rows and "&lt;script&gt;" in rows
    live = views.dataset_live(obj("Dataset", "x", {"preview": [{"label": "<b>", "text": "\"><img src=x>"}]}),
                              [], NOW)
    assert "<img src=x>" not in live and "&quot;&gt;&lt;img src=x&gt;" in live


def test_the_curves_have_one_point_per_epoch():
    history = [{"epoch": e, "trainLoss": 1 / e, "loss": 1.1 / e, "accuracy": 1 - 1 / (e + 1)} for e in range(1, 16)]
    svg = views.curves(history)
    assert svg.count('class="point s0"') == 15 + 15  # train loss (loss plot) and accuracy
    assert svg.count('class="point s1"') == 15  # validation loss
    assert svg.count("<polyline") == 3
    assert "no epoch yet" in views.curves([])


def test_the_lineage_graph_has_a_row_per_version():
    svg = views.lineage_graph("web", [
        {"digest": "a" * 64, "state": "Retired", "trainingJob": "v1", "datasetDigest": "d" * 64},
        {"digest": "b" * 64, "state": "Champion", "trainingJob": "web-retrain-1", "datasetDigest": "e" * 64},
    ])
    assert svg.count("<rect") == 8 and svg.count('marker-end="url(#arrow)"') == 6
    assert "state-Champion" in svg and "web-retrain-1" in svg and "data dddddddddd" in svg


def test_a_trainingjob_without_progress_says_unknown_not_zero():
    live = views.trainingjob_live(obj("TrainingJob", "cnn", {"phase": "Running"}, datasetRef={"name": "d"}), [], NOW)
    assert "<dd>unknown</dd>" in live and "<progress" not in live


def test_events_newest_first():
    events = [{"type": "Normal", "reason": "Old", "message": "a", "lastTimestamp": "2026-12-07T11:00:00Z"},
              {"type": "Warning", "reason": "New", "message": "b", "lastTimestamp": "2026-12-07T11:59:00Z"}]
    table = views.events_table(events, NOW)
    assert table.index("New") < table.index("Old") and "<td>1m</td>" in table


def test_own_code_shows_the_metric_it_is_gated_on():
    tj = obj("TrainingJob", "cartpole", {"phase": "Succeeded", "model": {"metrics": {"meanReturn": 484.66}}},
             command=["python", "train.py"], evaluation={"metric": "meanReturn", "minimum": 195})
    rows = views.overview_rows({"Dataset": [], "TrainingJob": [tj], "ModelDeployment": []}, NOW)
    assert "meanReturn 484.66" in rows
    page = views.trainingjob_live(tj, [], NOW)  # no datasetRef, no model.architecture: no crash
    assert "484.66" in page
