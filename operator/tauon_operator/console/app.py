"""The console's HTTP server (aiohttp): pages rendered from what its ServiceAccount may read,
their live parts re-fetched by the browser every two seconds, and the "Try it" requests relayed
to the model's own Service. The browser talks to this server only."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes.client.rest import ApiException

from tauon_operator import retraining, serving
from tauon_operator.api import API_VERSION
from tauon_operator.console import views
from tauon_operator.kube import Kube

log = logging.getLogger("tauon.console")
STATIC = Path(__file__).parent / "static"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MAX_BODY = 8 * 1024 * 1024
MODEL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=3)


class Config:
    def __init__(self, namespace: str, namespaces: tuple[str, ...], serve_port: int) -> None:
        self.namespace = namespace
        self.namespaces = namespaces  # the selector's choices; empty: every namespace with objects
        self.serve_port = serve_port


KUBE = web.AppKey("kube", Kube)
CONFIG = web.AppKey("config", Config)
TRAFFIC = web.AppKey("traffic", dict)
SESSION = web.AppKey("session", aiohttp.ClientSession)
NAMESPACES = web.AppKey("namespaces", tuple)  # (when listed, the selector's choices)
NAMESPACES_TTL = 15.0  # seconds the selector's choices are reused (a cluster-wide LIST each)


def now() -> datetime:
    return datetime.now(UTC)


def _ns(request: web.Request) -> str:
    ns = (
        request.match_info.get("ns")
        or request.query.get("namespace")
        or request.app[CONFIG].namespace
    )
    if not DNS_LABEL.match(ns):
        raise BadRequest(f"{ns[:80]!r} is not a namespace name (a DNS label)")
    return ns


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME.match(name):
        raise BadRequest(f"{name[:80]!r} is not an object name")
    return name


class BadRequest(Exception):
    pass


async def _namespaces(app: web.Application) -> list[str]:
    """The selector's choices: the configured ones, or every namespace holding Tauon objects
    (listed across the cluster; a console limited to namespaces offers its own)."""
    cfg = app[CONFIG]
    if cfg.namespaces:
        return list(cfg.namespaces)
    at, known = app[NAMESPACES]
    if time.monotonic() - at < NAMESPACES_TTL:
        return known
    try:
        lists = await asyncio.gather(
            *(app[KUBE].list_objects(API_VERSION, kind) for kind in views.KINDS)
        )
        found = sorted({o["metadata"]["namespace"] for items in lists for o in items})
    except ApiException:
        found = [cfg.namespace]
    app[NAMESPACES] = (time.monotonic(), found)
    return found


async def _objects(kube: Kube, ns: str) -> dict[str, list[dict[str, Any]]]:
    lists = await asyncio.gather(*(kube.list_objects(API_VERSION, k, ns) for k in views.KINDS))
    return dict(zip(views.KINDS, lists, strict=True))


async def _events(kube: Kube, ns: str, kind: str, name: str) -> list[dict[str, Any]]:
    try:
        items = await kube.list_objects("v1", "Event", ns)
    except ApiException:
        return []
    return [
        ev
        for ev in items
        if (ev.get("involvedObject") or {}).get("kind") == kind
        and (ev.get("involvedObject") or {}).get("name") == name
    ]


# --- pages ---------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    ns = _ns(request)
    body = (
        '<table class="overview"><thead><tr><th>Kind</th><th>Name</th><th>Phase</th>'
        "<th>Progress</th><th>Key metric</th><th>Age</th></tr></thead>"
        f'<tbody id="live">{await _overview_rows(request.app, ns)}</tbody></table>'
    )
    return _html(
        views.page(
            f"Overview of {ns}",
            ns,
            body,
            await _namespaces(request.app),
            live=f"/live/overview?namespace={ns}",
        )
    )


async def _overview_rows(app: web.Application, ns: str) -> str:
    objects = await _objects(app[KUBE], ns)
    if not any(objects.values()):
        return (
            f'<tr><td colspan="6" class="empty" role="status">No Datasets, TrainingJobs or '
            f"ModelDeployments in namespace {views.e(ns)} (or no such namespace, or none this "
            "console may read).</td></tr>"
        )
    return views.overview_rows(objects, now())


async def live_overview(request: web.Request) -> web.Response:
    return _html(await _overview_rows(request.app, _ns(request)))


async def _live(app: web.Application, kind: str, ns: str, name: str) -> str | None:
    obj = await app[KUBE].get(API_VERSION, kind, ns, name)
    if obj is None:
        return None
    events = await _events(app[KUBE], ns, kind, name)
    if kind == "Dataset":
        return views.dataset_live(obj, events, now())
    if kind == "TrainingJob":
        return views.trainingjob_live(obj, events, now())
    traffic = await _traffic(app, obj)
    return views.modeldeployment_live(obj, events, traffic, now())


def _gone(kind: str, ns: str, name: str) -> str:
    return (
        f'<p class="error" role="alert">{kind} {views.e(name)} does not exist in namespace '
        f"{views.e(ns)} (deleted, or never created).</p>"
    )


async def detail(request: web.Request) -> web.Response:
    kind = views.KIND_OF[request.match_info["kind"]]
    ns, name = _ns(request), _name(request)
    live = await _live(request.app, kind, ns, name)
    names = await _namespaces(request.app)
    if live is None:
        return _html(views.page(f"{kind} {name}", ns, _gone(kind, ns, name), names), status=404)
    body = f'<div id="live">{live}</div>'
    if kind == "ModelDeployment":
        obj = await request.app[KUBE].get(API_VERSION, kind, ns, name)
        body += views.try_it(obj or {"metadata": {"namespace": ns, "name": name}})
    path = f"/live/{request.match_info['kind']}/{ns}/{name}"
    return _html(views.page(f"{kind} {name}", ns, body, names, live=path))


async def live_detail(request: web.Request) -> web.Response:
    kind = views.KIND_OF[request.match_info["kind"]]
    ns, name = _ns(request), _name(request)
    live = await _live(request.app, kind, ns, name)
    if live is None:
        return _html(_gone(kind, ns, name), status=404)
    return _html(live)


# --- the model, through its Service -------------------------------------------------------------


def _model_base(md: dict[str, Any], port: int) -> str:
    """The model's Service on the serving port (status.url names the Service)."""
    url = str((md.get("status") or {}).get("url") or "")
    m = md["metadata"]
    host = url.removeprefix("http://").split("/")[0].split(":")[0] or (
        f"{m['name']}.{m['namespace']}.svc"
    )
    return f"http://{host}:{port}"


async def _ready_model(request: web.Request) -> tuple[dict[str, Any], str]:
    ns, name = _ns(request), _name(request)
    md = await request.app[KUBE].get(API_VERSION, "ModelDeployment", ns, name)
    if md is None:
        raise ModelProblem(404, f"ModelDeployment {name} does not exist in namespace {ns}")
    st = md.get("status") or {}
    if st.get("phase") != "Ready":
        why = views.ready_message(st) or "no status yet"
        raise ModelProblem(409, f"ModelDeployment {name} is not Ready ({st.get('phase')}: {why})")
    return md, _model_base(md, request.app[CONFIG].serve_port)


class ModelProblem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _relay(request: web.Request, method: str, path: str) -> web.Response:
    md, base = await _ready_model(request)
    body = await request.read() if method == "POST" else None
    if body is not None and len(body) > MAX_BODY:
        raise ModelProblem(413, f"the request is larger than {MAX_BODY} bytes")
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    path = path.format(name=md["metadata"]["name"])
    if request.query_string:  # topK, say
        path += "?" + request.query_string
    try:
        async with request.app[SESSION].request(
            method, base + path, data=body, headers=headers, timeout=MODEL_TIMEOUT
        ) as r:
            payload = await r.read()
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = {"error": payload[:300].decode(errors="replace")}
            return web.json_response(answer, status=r.status if r.status < 500 else 502)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ModelProblem(502, f"the model's Service did not answer: {e}") from e


async def model_metadata(request: web.Request) -> web.Response:
    return await _relay(request, "GET", "/v2/models/{name}")


async def predict(request: web.Request) -> web.Response:
    return await _relay(request, "POST", "/v1/predict")


async def feedback(request: web.Request) -> web.Response:
    return await _relay(request, "POST", "/v1/feedback")


async def _traffic(app: web.Application, md: dict[str, Any]) -> dict[str, Any] | None:
    """Request rate and latency of the stable track, from its /metrics (through the Service:
    one server's view), the rate between this scrape and the last one."""
    if (md.get("status") or {}).get("phase") not in ("Ready", "Degraded"):
        return None
    base = _model_base(md, app[CONFIG].serve_port)
    try:
        async with app[SESSION].get(base + "/metrics", timeout=aiohttp.ClientTimeout(total=3)) as r:
            if r.status != 200:
                return None
            counts = serving.prediction_metrics(await r.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    key = (md["metadata"]["namespace"], md["metadata"]["name"])
    t, prev = time.monotonic(), app[TRAFFIC].get(key)
    app[TRAFFIC][key] = (t, counts["requests"])
    rate = 0.0
    if prev and t > prev[0] and counts["requests"] >= prev[1]:
        rate = (counts["requests"] - prev[1]) / (t - prev[0])
    return {
        "rate": rate,
        "p50": retraining.quantile(counts["latency"], 0.5),
        "p99": retraining.quantile(counts["latency"], 0.99),
    }


# --- plumbing ------------------------------------------------------------------------------------


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


# Nothing but this server: scripts, styles, images (data: for the samples) and requests.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure a clear message (JSON under /api/, HTML elsewhere), never a trace."""
    api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except web.HTTPException as e:
        if api:
            return web.json_response({"error": e.reason}, status=e.status)
        raise
    except BadRequest as e:
        if api:
            return web.json_response({"error": str(e)}, status=400)
        return _html(f'<p class="error" role="alert">{views.e(str(e))}</p>', status=400)
    except ModelProblem as e:
        return web.json_response({"error": str(e)}, status=e.status)
    except ApiException as e:
        message = f"the Kubernetes API answered {e.status} {e.reason}"
        if e.status == 403:
            message = "this console's ServiceAccount may not read that"
        if api:
            return web.json_response({"error": message}, status=502)
        return _html(f'<p class="error" role="alert">{views.e(message)}</p>', status=502)
    except Exception:
        log.exception("console: %s %s", request.method, request.path)
        if api:
            return web.json_response({"error": "internal error; see the console's log"}, status=500)
        return _html(
            '<p class="error" role="alert">Internal error; see the console\'s log.</p>', 500
        )


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


def make_app(kube: Kube, config: Config) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY + 1024)
    app[KUBE], app[CONFIG], app[TRAFFIC] = kube, config, {}
    app[NAMESPACES] = (-NAMESPACES_TTL, [])
    app.cleanup_ctx.append(_session)
    kinds = "{kind:datasets|trainingjobs|modeldeployments}"
    app.add_routes(
        [
            web.get("/", overview),
            web.get("/healthz", healthz),
            web.get("/live/overview", live_overview),
            web.get(f"/{kinds}/{{ns}}/{{name}}", detail),
            web.get(f"/live/{kinds}/{{ns}}/{{name}}", live_detail),
            web.get("/api/{ns}/{name}/metadata", model_metadata),
            web.post("/api/{ns}/{name}/predict", predict),
            web.post("/api/{ns}/{name}/feedback", feedback),
            web.static("/static", STATIC),
        ]
    )
    return app
