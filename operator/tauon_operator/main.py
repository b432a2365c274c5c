"""`tauon-operator run`: Kopf settings chosen deliberately, metrics, liveness, then the watches.

tauon-operator run [--namespace NS ...] [--metrics-port 8000] [--health-port 8081]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
import prometheus_client
import urllib3
from kubernetes.client.rest import ApiException

from tauon_operator.controller import Controller
from tauon_operator.handlers import watch
from tauon_operator.kube import Kube
from tauon_operator.metrics import register_objects_by_phase
from tauon_operator.resource_metrics import register as register_resource_metrics
from tauon_operator.settings import Settings
from tauon_operator.state import controller, install

log = logging.getLogger("tauon.operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf builds a diff base (a deep copy of the object's essence) on every watch event, for
    change handlers (on.create, on.update, on.field) to diff against. We register none: every
    handler is an event handler feeding the cache, and reconciles compare with the cluster. So
    there is nothing to build, store or fetch; building it anyway was the largest single cost
    in the operator's profile (200 TrainingJobs: a third of its CPU)."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


class RetryEverySecond:
    """Back-off delays for kopf's API requests: 0.5 s, then 1 s, without end. Iterable again
    for every request, and not Sized, so kopf counts no limit."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((0.5,), itertools.repeat(1.0))


def configure(settings: kopf.OperatorSettings) -> None:
    """Kopf's knobs, each set on purpose."""
    # Our own prefixes: nothing of ours lands under kopf.zalando.org.
    settings.persistence.finalizer = "tauon.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tauon.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only what a user must notice becomes an Event from kopf itself.
    settings.posting.level = logging.WARNING
    # Watches end server-side before the client gives up, so reconnects are clean, not errors.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    # Kopf gives a failing request 8 retries (~55 s) and then lets the watch fail, to be
    # restarted on its own cycle: after a longer API outage recovery would wait on that. Retry
    # every second for as long as the API server is away, so recovery takes seconds.
    settings.networking.error_backoffs = RetryEverySecond()
    settings.networking.connect_timeout = 10
    # Per-object workers go idle quickly: thousands of objects, few events each.
    settings.queueing.idle_timeout = 1.0


@kopf.on.login()
def login(**kwargs):
    """In a pod, its service account; elsewhere the kubeconfig that KUBECONFIG names now."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    configure(settings)
    ours = memo.get("tauon_settings") or Settings.from_env()  # `kopf run -m` passes no memo
    # API calls run in threads (the official client is synchronous): enough for the workers.
    workers = 16
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tauon-api")
    )
    ctl = Controller(Kube.from_environment(pool=workers), ours, workers=workers)
    ctl.reconcilers.update(watch.RECONCILERS)
    install(ctl)
    register_objects_by_phase(lambda kind: controller().store.all(kind))
    register_resource_metrics(
        lambda kind: controller().store.all(kind), lambda: controller().queue_stats()
    )
    if ours.metrics_port:
        prometheus_client.start_http_server(ours.metrics_port)
    log.info("tauon operator started (runtime image %s)", ours.runtime_image)


@kopf.on.startup()
async def load_cache(memo: kopf.Memo, **_) -> None:
    """No reconcile before the cache holds what is there (kopf starts watching once every
    startup handler has succeeded). The children's informers get their own connections."""
    t0 = time.monotonic()
    namespaces = controller().settings.namespaces
    try:
        if "informers" not in memo:
            n = (len(watch.CHILDREN) + 1) * max(1, len(namespaces))
            kube = Kube.from_environment(pool=n + 2)
            # Kueue's Workloads are followed when Kueue is installed (checked at start: a
            # Kueue installed later is seen after the operator restarts).
            kueue = await asyncio.to_thread(kube.served_sync, *watch.WORKLOADS)
            log.info("Kueue %s", "found: following its Workloads" if kueue else "not installed")
            memo["informers"] = watch.start_informers(kube, namespaces, kueue=kueue)
        await watch.load_cache(memo["informers"], namespaces)
    except (ApiException, OSError, urllib3.exceptions.HTTPError, TimeoutError) as e:
        raise kopf.TemporaryError(f"loading the cache: {e}", delay=2) from e
    log.info("cache loaded in %.1f s", time.monotonic() - t0)


@kopf.on.cleanup()
async def stop_informers(memo: kopf.Memo, **_) -> None:
    for informer in memo.get("informers", ()):
        informer.stop()


def settings_for(args: argparse.Namespace, env: Settings) -> Settings:
    """The environment's settings with the flags over them; every other setting (the artifact
    store, the images) is the environment's."""
    return dataclasses.replace(
        env,
        namespaces=tuple(args.namespace) or env.namespaces,
        metrics_port=env.metrics_port if args.metrics_port is None else args.metrics_port,
        health_port=env.health_port if args.health_port is None else args.health_port,
    )


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tauon-operator run", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    ap.add_argument("--metrics-port", type=int, help="Prometheus metrics port (0 disables)")
    ap.add_argument("--health-port", type=int, help="liveness endpoint port (0 disables)")
    ap.add_argument(
        "--peering", help="a KopfPeering name for several replicas (default: standalone)"
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv or [])
    settings = settings_for(args, Settings.from_env())
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one INFO line per watch event and handler is noise at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo = kopf.Memo(tauon_settings=settings)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=args.peering is None,
        peering_name=args.peering,
        memo=memo,
        liveness_endpoint=(
            f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
        ),
    )
    return 0
