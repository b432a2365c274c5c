"""The console's pages as HTML, rendered on the server from the objects the API server returned:
pure functions of dicts, so every page is a unit test. Plots are inline SVG drawn here (no
plotting library to download or to run in the browser: one polyline per series)."""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

KINDS = ("Dataset", "TrainingJob", "ModelDeployment")
PATHS = {
    "Dataset": "datasets",
    "TrainingJob": "trainingjobs",
    "ModelDeployment": "modeldeployments",
}
KIND_OF = {v: k for k, v in PATHS.items()}


def e(value: Any) -> str:
    """Escaped text ('' for None)."""
    return "" if value is None else html.escape(str(value), quote=True)


def age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return ""
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    s = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def link(kind: str, ns: str, name: str) -> str:
    return f'<a href="/{PATHS[kind]}/{e(ns)}/{e(name)}">{e(name)}</a>'


def ready_message(status: dict[str, Any]) -> str:
    c: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value == value else "NaN"
    return e(value)


# --- the overview --------------------------------------------------------------------------------


def summary(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """What the overview shows of one object: phase, progress, key metric."""
    st = obj.get("status") or {}
    progress = metric = ""
    if kind == "Dataset":
        counts = st.get("counts") or {}
        progress = f"{counts['total']} samples" if counts.get("total") is not None else ""
        metric = f"digest {st['digest'][:12]}" if st.get("digest") else ""
    elif kind == "TrainingJob":
        p = st.get("progress") or {}
        if p.get("percent") is not None:
            progress = (
                f"{p['percent']:.0f} % (epoch {p.get('epoch', 0)}/{p.get('totalEpochs', '?')})"
            )
        # The gate's metric: accuracy for a built-in model, own code's own (meanReturn, ...).
        name = ((obj.get("spec") or {}).get("evaluation") or {}).get("metric") or "accuracy"
        value = ((st.get("model") or {}).get("metrics") or {}).get(name)
        if value is None:
            value = ((st.get("metrics") or {}).get("latest") or {}).get(name)
        metric = f"{name} {fmt(value)}" if value is not None else ""
    else:
        r = st.get("replicas") or {}
        if r:
            progress = f"{r.get('ready', 0)}/{r.get('desired', 0)} ready"
        if st.get("feedbackCount") is not None:
            metric = f"{st['feedbackCount']} feedback"
            if st.get("feedbackAccuracy") is not None:
                metric += f", accuracy {fmt(st['feedbackAccuracy'], 3)}"
    return {"phase": st.get("phase") or "Pending", "progress": progress, "metric": metric}


def overview_rows(objects: dict[str, list[dict[str, Any]]], now: datetime) -> str:
    """The overview table's body: every Dataset, TrainingJob and ModelDeployment."""
    rows = []
    for kind in KINDS:
        for obj in sorted(objects.get(kind) or [], key=lambda o: o["metadata"]["name"]):
            m, s = obj["metadata"], summary(kind, obj)
            rows.append(
                f'<tr data-kind="{kind}" data-name="{e(m["name"])}">'
                f"<td>{kind}</td><td>{link(kind, m['namespace'], m['name'])}</td>"
                f'<td><span class="phase phase-{e(s["phase"])}">{e(s["phase"])}</span></td>'
                f"<td>{e(s['progress'])}</td><td>{e(s['metric'])}</td>"
                f"<td>{age(m.get('creationTimestamp'), now)}</td></tr>"
            )
    if not rows:
        return '<tr><td colspan="6" class="empty">No Tauon objects here.</td></tr>'
    return "\n".join(rows)


# --- shared blocks -------------------------------------------------------------------------------


def conditions_table(status: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(c.get('type'))}</td><td>{e(c.get('status'))}</td><td>{e(c.get('reason'))}</td>"
        f"<td>{e(c.get('message'))}</td></tr>"
        for c in status.get("conditions") or []
    )
    return (
        "<table><caption>Conditions</caption><thead><tr><th>Type</th><th>Status</th>"
        f"<th>Reason</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def events_table(events: list[dict[str, Any]], now: datetime) -> str:
    ordered = sorted(
        events, key=lambda ev: ev.get("lastTimestamp") or ev.get("eventTime") or "", reverse=True
    )[:20]
    rows = "".join(
        f"<tr><td>{age(ev.get('lastTimestamp') or ev.get('eventTime'), now)}</td>"
        f"<td>{e(ev.get('type'))}</td><td>{e(ev.get('reason'))}</td><td>{e(ev.get('message'))}</td></tr>"
        for ev in ordered
    )
    if not rows:
        rows = '<tr><td colspan="4" class="empty">No events.</td></tr>'
    return (
        "<table><caption>Events</caption><thead><tr><th>Age</th><th>Type</th><th>Reason</th>"
        f"<th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def fields(pairs: list[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in pairs if v not in (None, ""))
    return f'<dl class="fields">{items}</dl>'


# --- plots ---------------------------------------------------------------------------------------

PLOT_W, PLOT_H, PAD = 560, 220, 40


def line_plot(title: str, series: dict[str, list[tuple[float, float]]], y_label: str) -> str:
    """An SVG line plot: one polyline (and a dot per point) per series."""
    points = [p for s in series.values() for p in s]
    if not points:
        return f'<figure class="plot"><figcaption>{e(title)}: no epoch yet</figcaption></figure>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (PLOT_W - 2 * PAD)

    def sy(y: float) -> float:
        return PLOT_H - PAD + (y - y0) / (y1 - y0) * (2 * PAD - PLOT_H)

    body = [
        f'<line x1="{PAD}" y1="{PLOT_H - PAD}" x2="{PLOT_W - PAD}" y2="{PLOT_H - PAD}" class="axis"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{PLOT_H - PAD}" class="axis"/>',
        f'<text x="{PAD}" y="{PAD - 8}" class="tick">{fmt(y1, 3)}</text>',
        f'<text x="{PAD - 4}" y="{PLOT_H - PAD + 14}" class="tick">{fmt(x0, 0)}</text>',
        f'<text x="{PLOT_W - PAD}" y="{PLOT_H - PAD + 14}" class="tick" text-anchor="end">'
        f"epoch {fmt(x1, 0)}</text>",
    ]
    legend = []
    for k, (name, pts) in enumerate(series.items()):
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        body.append(f'<polyline class="series s{k}" points="{path}" data-series="{e(name)}"/>')
        body += [
            f'<circle class="point s{k}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3">'
            f"<title>{e(name)} epoch {fmt(x, 0)}: {fmt(y)}</title></circle>"
            for x, y in pts
        ]
        legend.append(f'<span class="legend s{k}">{e(name)}</span>')
    return (
        f'<figure class="plot"><svg viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
        f'aria-label="{e(title)} per epoch ({e(y_label)})">{"".join(body)}</svg>'
        f"<figcaption>{e(title)} {' '.join(legend)}</figcaption></figure>"
    )


def curves(history: list[dict[str, float]]) -> str:
    """Loss and accuracy per epoch from status.metrics.history."""

    def series(key: str) -> list[tuple[float, float]]:
        return [(h["epoch"], h[key]) for h in history if key in h and "epoch" in h]

    loss = {"train loss": series("trainLoss"), "validation loss": series("loss")}
    accuracy = {"validation accuracy": series("accuracy")}
    return line_plot("Loss", loss, "loss") + line_plot("Accuracy", accuracy, "accuracy")


def lineage_graph(md_name: str, versions: list[dict[str, Any]]) -> str:
    """status.models as a graph: dataset digest -> TrainingJob -> model digest -> this deployment
    (one row per version, the state on the model's box)."""
    if not versions:
        return '<p class="empty">No model version served yet.</p>'
    row_h, box_w, box_h = 54, 170, 34
    cols = [10, 200, 390, 580]
    height = row_h * len(versions) + 20
    parts = []
    for i, v in enumerate(versions):
        y = 10 + i * row_h
        labels = [
            f"data {str(v.get('datasetDigest') or '?')[:10]}",
            str(v.get("trainingJob") or "pinned model"),
            f"{str(v.get('digest'))[:12]} {v.get('state', '')}",
            md_name,
        ]
        for c, (x, text) in enumerate(zip(cols, labels, strict=True)):
            cls = f"box state-{e(v.get('state'))}" if c == 2 else "box"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" class="{cls}"/>'
                f'<text x="{x + 8}" y="{y + 21}" class="boxlabel">{e(text)}</text>'
            )
            if c < 3:
                parts.append(
                    f'<line x1="{x + box_w}" y1="{y + box_h / 2}" x2="{cols[c + 1]}" '
                    f'y2="{y + box_h / 2}" class="edge" marker-end="url(#arrow)"/>'
                )
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    )
    return (
        f'<svg class="lineage" viewBox="0 0 760 {height}" role="img" aria-label="Model lineage: '
        f'dataset, TrainingJob, model, deployment">{marker}{"".join(parts)}</svg>'
    )


# --- the detail pages ----------------------------------------------------------------------------


def dataset_live(obj: dict[str, Any], events: list[dict[str, Any]], now: datetime) -> str:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    counts = st.get("counts") or {}
    split = ", ".join(f"{k} {counts[k]}" for k in ("train", "validation", "test") if k in counts)
    previews = []
    for s in st.get("preview") or []:
        if s.get("image"):
            inner = f'<img src="{e(s["image"])}" alt="a sample of class {e(s["label"])}">'
        elif s.get("text"):
            inner = f"<q>{e(s['text'])}</q>"
        else:
            inner = "<br>".join(f"{e(k)} {fmt(v)}" for k, v in (s.get("features") or {}).items())
        previews.append(
            f'<figure class="sample">{inner}<figcaption>{e(s["label"])}</figcaption></figure>'
        )
    return (
        fields(
            [
                (
                    "Phase",
                    f'<span class="phase phase-{e(st.get("phase"))}">{e(st.get("phase"))}</span>',
                ),
                ("Task", e(spec.get("task") or "image-classification")),
                ("Source", f"<code>{e(json.dumps(spec.get('source') or {}))}</code>"),
                (
                    "Version digest",
                    f"<code>{e(st.get('digest'))}</code>" if st.get("digest") else "",
                ),
                ("Splits", e(split)),
                ("Classes", e(", ".join(st.get("classes") or []))),
                ("Stored at", e(st.get("location") or st.get("claimName"))),
                ("Status", e(ready_message(st))),
            ]
        )
        + (f'<h2>Samples</h2><div class="samples">{"".join(previews)}</div>' if previews else "")
        + conditions_table(st)
        + events_table(events, now)
    )


def trainingjob_live(obj: dict[str, Any], events: list[dict[str, Any]], now: datetime) -> str:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    p = st.get("progress") or {}
    percent = p.get("percent")
    bar = (
        f'<progress max="100" value="{percent}" aria-label="progress">{fmt(percent, 1)} %</progress> '
        f"{fmt(percent, 1)} % — epoch {p.get('epoch', 0)}/{p.get('totalEpochs', '?')}"
        + (f", ETA {p['etaSeconds']} s" if p.get("etaSeconds") is not None else "")
        if percent is not None
        else "unknown"
    )
    model = st.get("model") or {}
    history = list((st.get("metrics") or {}).get("history") or [])
    return (
        fields(
            [
                (
                    "Phase",
                    f'<span class="phase phase-{e(st.get("phase"))}">{e(st.get("phase"))}</span>',
                ),
                (
                    "Dataset",
                    link("Dataset", obj["metadata"]["namespace"], spec["datasetRef"]["name"])
                    if spec.get("datasetRef")
                    else "",
                ),
                ("Architecture", e((spec.get("model") or {}).get("architecture"))),
                ("Progress", bar),
                ("Restarts", e(st.get("restarts", 0))),
                ("Status", e(ready_message(st))),
            ]
        )
        + f'<h2>Curves</h2><div class="curves" data-epochs="{len(history)}">{curves(history)}</div>'
        + (
            "<h2>Model</h2>"
            + fields(
                [
                    ("Name", e(model.get("name"))),
                    ("Location", f"<code>{e(model.get('location'))}</code>"),
                    ("sha256", f"<code>{e(model.get('sha256'))}</code>"),
                    ("Trained on", f"<code>{e(model.get('datasetDigest'))}</code>"),
                    (
                        "Test metrics",
                        e(
                            ", ".join(
                                f"{k} {fmt(v)}" for k, v in (model.get("metrics") or {}).items()
                            )
                        ),
                    ),
                ]
            )
            if model
            else ""
        )
        + conditions_table(st)
        + events_table(events, now)
    )


def modeldeployment_live(
    obj: dict[str, Any], events: list[dict[str, Any]], traffic: dict[str, Any] | None, now: datetime
) -> str:
    st, m = obj.get("status") or {}, obj["metadata"]
    r = st.get("replicas") or {}
    canary = st.get("canary") or {}
    loop = st.get("retraining") or {}
    rate = ""
    if traffic:
        rate = f"{fmt(traffic.get('rate'), 1)} req/s"
        if traffic.get("p50") is not None:
            rate += (
                f", latency p50 {traffic['p50'] * 1000:.1f} ms, p99 {traffic['p99'] * 1000:.1f} ms"
            )
    return (
        fields(
            [
                (
                    "Phase",
                    f'<span class="phase phase-{e(st.get("phase"))}">{e(st.get("phase"))}</span>',
                ),
                ("URL", f"<code>{e(st.get('url'))}</code>"),
                ("Replicas", e(f"{r.get('ready', 0)}/{r.get('desired', 0)} ready") if r else ""),
                (
                    "Served model",
                    f"<code>{e(st.get('modelDigest'))}</code>" if st.get("modelDigest") else "",
                ),
                (
                    "Canary",
                    e(
                        f"{canary.get('modelDigest', '')[:12]} at {canary.get('trafficPercent')} % "
                        f"(measured {canary.get('measuredPercent', '-')} %)"
                    )
                    if canary
                    else "none",
                ),
                ("Traffic", e(rate) if rate else "no request yet"),
                (
                    "Feedback",
                    f'<span id="feedback-count">{e(st.get("feedbackCount", 0))}</span>'
                    + (
                        f", accuracy {fmt(st['feedbackAccuracy'], 3)}"
                        if st.get("feedbackAccuracy") is not None
                        else ""
                    ),
                ),
                (
                    "Retraining",
                    e(f"{loop.get('phase')}, round {loop.get('round', 0)}") if loop else "",
                ),
                ("Status", e(ready_message(st))),
            ]
        )
        + "<h2>Model versions</h2>"
        + lineage_graph(m["name"], list(st.get("models") or []))
        + conditions_table(st)
        + events_table(events, now)
    )


# --- the page frame ------------------------------------------------------------------------------


def page(title: str, namespace: str, body: str, namespaces: list[str], live: str = "") -> str:
    """The frame every page shares: a header with the namespace selector, the body, and the
    live region (re-fetched every two seconds by console.js from `live`)."""
    options = "".join(
        f'<option value="{e(n)}"{" selected" if n == namespace else ""}>{e(n)}</option>'
        for n in sorted(set(namespaces) | {namespace})
    )
    live_attr = f' data-live="{e(live)}"' if live else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{e(title)} · Tauon</title><link rel="stylesheet" href="/static/console.css"></head>
<body><header><a class="brand" href="/?namespace={e(namespace)}">Tauon</a>
<form method="get" action="/" class="ns"><label>Namespace
<select name="namespace" id="namespace">{options}</select></label>
<button id="show-namespace">Show</button></form></header>
<main><h1>{e(title)}</h1>{body}</main>
<script src="/static/console.js" defer></script>
<div hidden id="live-source"{live_attr}></div></body></html>"""


def error_page(title: str, message: str, namespace: str, namespaces: list[str]) -> str:
    return page(title, namespace, f'<p class="error" role="alert">{e(message)}</p>', namespaces)


def try_it(obj: dict[str, Any]) -> str:
    """The form that sends a request to the served model through the console, and feedback."""
    m = obj["metadata"]
    api = f"/api/{e(m['namespace'])}/{e(m['name'])}"
    return f"""<section class="try" data-api="{api}">
<h2>Try it</h2>
<div class="try-image" hidden>
  <canvas id="pad" width="160" height="160" aria-label="Draw a digit here"></canvas>
  <div><button type="button" id="clear">Clear</button>
  <label>or upload an image <input type="file" id="upload" accept="image/*"></label></div>
</div>
<div class="try-text" hidden><label>Text <textarea id="text" rows="3" cols="50"></textarea></label></div>
<div class="try-tabular" hidden><div id="features"></div></div>
<p><button type="button" id="predict">Predict</button></p>
<output id="answer" aria-live="polite"></output>
<div id="correct" hidden><label>That was wrong, it is <select id="truth"></select></label>
<button type="button" id="send-feedback">Send feedback</button></div>
<p id="try-error" class="error" role="alert" hidden></p>
</section>"""
