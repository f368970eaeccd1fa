"""The model server: ``models:/<name>@champion`` behind a FastAPI app that looks each customer's features up in
Feast's online store and scores requests in micro-batches.

- **Micro-batching.** Concurrent requests share one batched Feast lookup and one ``predict`` call (up to
  ``max_batch`` rows) on one inference thread under ``torch.inference_mode``; a batch waits for company
  (at most ``max_wait_ms``) only as long as recent load says more requests are coming.
- **Follows the alias, swaps without a gap.** A watcher resolves the alias every ``poll_s`` seconds. A new
  version is loaded beside the one serving, warmed up and smoke-tested on rows of its own evaluation set,
  then swapped in with one reference assignment: requests in flight finish on the old version, the next
  batch uses the new one.
- **Refuses a bad version.** One that fails to load, raises, or returns NaN or out-of-range scores is
  refused: the old version keeps serving, and ``/health`` (and ``/metrics``) say which version was refused
  and why. The deploy task reads that and rolls the alias back.
- **Missing features are a policy** (``--missing-features``): ``reject`` (default) answers 503 naming the
  missing features; ``impute`` scores them as 0 (no activity: what training does with a missing value) and
  names them in the answer. Either way they are counted.
- **Bad input** gets a 4xx with a message: malformed JSON or wrong types 422, unknown fields 422, a body over
  ``max_body_bytes`` 413 before it is read whole.
- **Predictions are logged** with their features (Parquet under ``--log-dir``, flushed in the background) for
  drift monitoring.

Run: ``python -m mlplatform.serving.server --model-uri models:/ticket_escalation@champion --tracking-uri ...``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)
ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
MissingPolicy = Literal["reject", "impute"]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64)
    subject: str = Field(max_length=1000)
    body: str = Field(max_length=20000)


class MissingFeatures(Exception):
    def __init__(self, customer_id: str, names: list[str]) -> None:
        super().__init__(f"no online value for {', '.join(names)} of customer {customer_id}")
        self.customer_id, self.names = customer_id, names


class InvalidScore(Exception):
    """The model returned NaN or a score outside [0, 1] for this request."""


class Refused(Exception):
    """A model version that must not serve (it failed to load, raised, or scored nonsense)."""


def served_feature_service(tracking_uri: str, run_id: str | None, default: str) -> str:
    """The FeatureService the model was registered with (the run's ``feast.feature_service`` tag, set by
    the register step). A model registered before per-version services falls back to ``default``."""
    from mlflow import MlflowClient

    from mlplatform.pipeline.stages import FEATURE_SERVICE_TAG

    tag = MlflowClient(tracking_uri).get_run(run_id).data.tags.get(FEATURE_SERVICE_TAG) if run_id else None
    if not tag:
        log.warning("run %s has no %s tag: using the base service %s", run_id, FEATURE_SERVICE_TAG, default)
    return tag or default


@dataclass
class Loaded:
    """One model version, loaded, checked and ready to serve."""

    version: str
    uri: str
    run_id: str | None
    model: Any
    service_name: str
    service: Any
    features: list[str]
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_uri": self.uri,
            "run_id": self.run_id,
            "feature_service": self.service_name,
            "since": self.loaded_at,
        }


def _valid(probs: Any, n: int) -> list[bool]:
    """Per row: is the score a finite probability? (None, text, NaN and out-of-range are not.)"""
    values = list(probs)
    if len(values) != n:
        raise Refused(f"returned {len(values)} scores for {n} rows")

    def ok(p: Any) -> bool:
        try:
            x = float(p)
        except (TypeError, ValueError):
            return False
        return math.isfinite(x) and 0.0 <= x <= 1.0

    return [ok(p) for p in values]


class Metrics:
    """The server's Prometheus series (a registry of its own: several apps may live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mlp_serving_requests", "Predict requests by HTTP status", ["code"], registry=r)
        self.latency = Histogram(
            "mlp_serving_request_seconds",
            "Predict latency, queueing included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch = Histogram(
            "mlp_serving_batch_size", "Requests per model call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.stage = Histogram(
            "mlp_serving_stage_seconds",
            "Time of a batch's feature lookup and model call",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.missing = Counter(
            "mlp_serving_missing_features", "Lookups without a feature value", ["feature"], registry=r
        )
        self.swaps = Counter("mlp_serving_model_swaps", "Model versions swapped in or refused", ["outcome"], registry=r)
        self.version = Gauge("mlp_serving_model_version", "The registry version being served", registry=r)


class ModelHolder:
    """The version serving now, and the watcher that loads, checks and swaps in the next one."""

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str,
        store: Any,
        default_service: str,
        metrics: Metrics,
        check_rows: int = 32,
    ) -> None:
        self.model_uri, self.tracking_uri, self.store = model_uri, tracking_uri, store
        self.default_service, self.metrics, self.check_rows = default_service, metrics, check_rows
        m = ALIAS_URI.match(model_uri)
        self.name: str | None = m["name"] if m else None
        self.alias: str | None = m["alias"] if m else None
        self.current: Loaded | None = None
        self.refused: dict[str, dict[str, str]] = {}
        self.wanted = ""  # the version the alias named at the last look
        self.last_error = ""
        self.lock = threading.Lock()  # one load at a time

    def target(self) -> tuple[str, str]:
        """(version label, loadable URI) the server should serve now."""
        if self.name is None:
            return self.model_uri, self.model_uri
        from mlflow import MlflowClient

        v = MlflowClient(self.tracking_uri).get_model_version_by_alias(self.name, self.alias)
        return str(v.version), f"models:/{self.name}/{v.version}"

    def _check_frame(self, loaded: Loaded) -> Any:
        """Rows to smoke-test a version on: the head of its own evaluation set (the gate's), or made-up ones."""
        import pandas as pd

        if self.name is not None:
            from mlflow import MlflowClient

            tags = MlflowClient(self.tracking_uri).get_model_version(self.name, loaded.version).tags
            uri, sha = tags.get("gate.eval_set.uri"), tags.get("gate.eval_set.sha256")
            if uri and sha:
                try:
                    from mlplatform.registry.evaluation import load_eval_set, model_input

                    return model_input(load_eval_set(uri, sha).head(self.check_rows))
                except (OSError, ValueError) as exc:
                    log.warning("version %s: its evaluation set is not readable here (%s)", loaded.version, exc)
        rows = [
            {"subject": "Production outage", "body": "Everything is down since this morning.", "f": 1.0},
            {"subject": "Question", "body": "How do I export the monthly report?", "f": 0.0},
        ] * (self.check_rows // 2)
        frame = pd.DataFrame(rows).drop(columns="f")
        for i, name in enumerate(loaded.features):
            frame[name] = [float((i + j) % 5) for j in range(len(frame))]
        return frame

    def load(self, version: str, uri: str) -> Loaded:
        import mlflow

        try:
            model = mlflow.pyfunc.load_model(uri)
        except Exception as exc:  # noqa: BLE001 - whatever fails to load is refused
            raise Refused(f"failed to load: {type(exc).__name__}: {exc}") from exc
        run_id = model.metadata.run_id
        service_name = served_feature_service(self.tracking_uri, run_id, self.default_service)
        from feast.errors import FeatureServiceNotFoundException

        try:
            service = self.store.get_feature_service(service_name)
        except FeatureServiceNotFoundException as exc:  # (the registry being down is not the model's fault)
            raise Refused(f"its feature service {service_name!r} is not in Feast: {exc}") from exc
        features = [f.name for p in service.feature_view_projections for f in p.features]
        loaded = Loaded(version, uri, run_id, model, service_name, service, features)
        frame = self._check_frame(loaded)
        for _ in range(2):  # the first call warms up (tokenizer, kernels); both must be right
            try:
                out = model.predict(frame)
                probs = out["escalation_probability"]
            except Exception as exc:  # noqa: BLE001
                raise Refused(f"raised on its smoke-test rows: {type(exc).__name__}: {exc}") from exc
            ok = _valid(probs, len(frame))
            if not all(ok):
                raise Refused(f"{ok.count(False)} of {len(ok)} smoke-test scores are NaN or outside [0, 1]")
        return loaded

    def refresh(self) -> str:
        """One look at the alias: swap in its version if it is new, checked and good. Returns what happened."""
        with self.lock:
            try:
                version, uri = self.target()
            except Exception as exc:  # noqa: BLE001 - the registry is down: keep serving what we have
                self.last_error = f"cannot resolve {self.model_uri}: {exc}"
                return "unreachable"
            self.wanted = version
            # a refusal lasts while the alias names that version: promoted again later, it is tried again
            self.refused = {v: why for v, why in self.refused.items() if v == version}
            if self.current is not None and self.current.version == version:
                return "current"
            if version in self.refused:
                return "refused"
            log.info("loading %s (version %s) beside %s", uri, version, self.current and self.current.version)
            try:
                loaded = self.load(version, uri)
            except Refused as exc:
                self.refused[version] = {"reason": str(exc), "at": datetime.now(UTC).isoformat()}
                self.metrics.swaps.labels("refused").inc()
                serving = self.current.version if self.current else None
                log.error("refused version %s: %s (still serving %s)", version, exc, serving)
                return "refused"
            except Exception as exc:  # noqa: BLE001 - the registry or the store failed, not the model: retry
                self.last_error = f"could not check version {version} yet: {type(exc).__name__}: {exc}"
                serving = self.current.version if self.current else None
                log.warning("%s (still serving %s; next try in one poll)", self.last_error, serving)
                return "retry"
            self.current = loaded  # the swap: one reference, read once per batch
            self.last_error = ""
            self.metrics.swaps.labels("swapped").inc()
            if version.isdigit():
                self.metrics.version.set(int(version))
            log.info("serving version %s (%s)", version, loaded.service_name)
            return "swapped"

    def watch(self, stop: threading.Event, poll_s: float) -> None:
        while not stop.wait(poll_s):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive anything one look can throw
                log.exception("alias watch failed; next try in one poll")


class PredictionLog:
    """Served predictions with their features, appended in memory and flushed as Parquet files
    (``<dir>/date=<day>/<host>-<pid>-<n>.parquet``, written to a temporary name then renamed)."""

    def __init__(self, directory: Path | None, flush_rows: int = 2000) -> None:
        self.dir, self.flush_rows = directory, flush_rows
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.seq = 0
        self.tag = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def add(self, rows: list[dict[str, Any]]) -> None:
        if self.dir is None:
            return
        with self.lock:
            self.rows.extend(rows)
            full = len(self.rows) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        if self.dir is None:
            return 0
        import pandas as pd

        with self.lock:
            rows, self.rows = self.rows, []
            self.seq += 1
            seq = self.seq
        if not rows:
            return 0
        frame = pd.DataFrame(rows)
        for day, part in frame.groupby(frame["served_at"].str[:10], sort=True):  # a flush across midnight
            out = self.dir / f"date={day}" / f"{self.tag}-{seq:06d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name("." + out.name + ".tmp")
            part.to_parquet(tmp, index=False)
            tmp.replace(out)
        return len(rows)


class Batcher:
    """Requests that arrive together share one call of ``work`` (at most ``max_batch``), on one inference
    thread. How long a batch waits for company adapts to the load: it waits (at most ``max_wait_s``) only
    until it is as large as the largest of the recent batches, so a lone client never waits, and
    concurrent clients, whose requests arrive a few milliseconds apart, share one call."""

    def __init__(self, work: Callable[[list[Any]], list[Any]], max_batch: int, max_wait_s: float) -> None:
        from collections import deque

        self.work, self.max_batch, self.max_wait_s = work, max_batch, max_wait_s
        self.recent: deque[int] = deque(maxlen=32)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False)

    async def submit(self, item: Any) -> Any:
        assert self.queue is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one batch must not leave every later request waiting
                log.exception("micro-batcher failed; restarting it")

    async def _serve(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            target = min(self.max_batch, max(self.recent, default=1))
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0 or len(batch) >= target:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            self.recent.append(len(batch))
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a client that went away
            try:
                results = await loop.run_in_executor(self.executor, self.work, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(live)}")
            except Exception as exc:  # noqa: BLE001 - every waiter of this batch gets the error
                results = [exc] * len(live)
            for (_, fut), res in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is read whole (by its
    Content-Length, or as soon as a chunked body passes the limit)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _reply(self, send: Any, status: int, message: str) -> None:
        import json

        body = json.dumps({"detail": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._reply(send, 400, "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await self._reply(send, 413, f"request body of {int(length)} bytes is over the {self.max_bytes} limit")
                return
        seen, started, over = 0, False, False

        async def limited() -> Any:
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    over = True  # the app reads no further: to it, the client went away
                    return {"type": "http.disconnect"}
            return msg

        async def tracked(msg: Any) -> None:
            nonlocal started
            if over:
                return  # whatever the app answers to a cut-off body, the client gets the 413
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, tracked)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._reply(send, 413, f"request body is over the {self.max_bytes} byte limit")


def create_app(
    model_uri: str,
    tracking_uri: str,
    *,
    poll_s: float = 2.0,
    max_batch: int = 32,
    max_wait_ms: float = 10.0,
    missing: MissingPolicy = "reject",
    max_body_bytes: int = 64 * 1024,
    log_dir: Path | None = None,
) -> Any:
    import mlflow
    import pandas as pd
    from fastapi import FastAPI, HTTPException
    from fastapi.exception_handlers import request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    from mlplatform.config.settings import get_settings
    from mlplatform.features.store import get_store

    mlflow.set_tracking_uri(tracking_uri)
    s = get_settings()
    store = get_store(s, serving=True)  # registry refreshed in the background, never in a request
    metrics = Metrics()
    holder = ModelHolder(model_uri, tracking_uri, store, s.feature_service, metrics)
    predictions = PredictionLog(log_dir)
    stop = threading.Event()

    def score(reqs: list[PredictRequest]) -> list[Any]:
        """One batch: one Feast lookup for its customers, one predict for the rows that can be scored."""
        loaded = holder.current
        if loaded is None:
            return [HTTPException(503, detail="no model loaded yet")] * len(reqs)
        ids = list(dict.fromkeys(r.customer_id for r in reqs))
        t0 = time.perf_counter()
        online = store.get_online_features(
            features=loaded.service, entity_rows=[{"customer_id": c} for c in ids]
        ).to_dict()
        metrics.stage.labels("lookup").observe(time.perf_counter() - t0)
        at = {c: i for i, c in enumerate(online["customer_id"])}
        results: list[Any] = [None] * len(reqs)
        rows, slots, gaps = [], [], []
        for k, r in enumerate(reqs):
            values = {f: online[f][at[r.customer_id]] for f in loaded.features}
            absent = [f for f, v in values.items() if v is None]
            for f in absent:
                metrics.missing.labels(f).inc()
            if absent and missing == "reject":
                results[k] = MissingFeatures(r.customer_id, absent)
                continue
            numbers = {f: float("nan") if v is None else float(v) for f, v in values.items()}
            rows.append({**numbers, "subject": r.subject, "body": r.body})
            slots.append(k)
            gaps.append((values, absent))
        if rows:
            metrics.batch.observe(len(rows))
            t0 = time.perf_counter()
            probs = loaded.model.predict(pd.DataFrame(rows))["escalation_probability"].tolist()
            metrics.stage.labels("predict").observe(time.perf_counter() - t0)
            served_at = datetime.now(UTC).isoformat()
            logged = []
            for k, p, ok, (values, absent) in zip(slots, probs, _valid(probs, len(rows)), gaps, strict=True):
                if not ok:
                    results[k] = InvalidScore(f"model version {loaded.version} returned {p} for this request")
                    continue
                results[k] = {
                    "customer_id": reqs[k].customer_id,
                    "escalation_probability": round(float(p), 4),
                    "escalate": bool(p >= 0.5),
                    "features": values,
                    "missing_features": absent,
                    "model_uri": model_uri,
                    "model_version": loaded.version,
                }
                logged.append(
                    {
                        "served_at": served_at,
                        "model_version": loaded.version,
                        "customer_id": reqs[k].customer_id,
                        **values,
                        "escalation_probability": float(p),
                    }
                )
            predictions.add(logged)
        return results

    batcher = Batcher(score, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)

    def flusher() -> None:
        while not stop.wait(5.0):
            predictions.flush()

    async def lifespan(app: Any) -> Any:
        holder.refresh()
        if holder.current is None:
            log.error("no model to serve yet (%s); retrying every %.0f s", holder.last_error or holder.refused, poll_s)
        threading.Thread(target=holder.watch, args=(stop, poll_s), name="alias-watch", daemon=True).start()
        threading.Thread(target=flusher, name="prediction-log", daemon=True).start()
        await batcher.start()
        yield
        stop.set()
        await batcher.stop()
        predictions.flush()

    app = FastAPI(title="mlplatform model server", lifespan=lifespan)

    @app.get("/livez")
    def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health")
    def health() -> Any:
        """Ready (200) once a version is serving; 503 before. Names refused versions and why."""
        cur = holder.current
        body = {
            "status": ("degraded" if holder.wanted in holder.refused else "ok") if cur else "loading",
            "wanted_version": holder.wanted,
            "model_uri": model_uri,
            "serving": cur.describe() if cur else None,
            "run_id": cur.run_id if cur else None,
            "feature_service": cur.service_name if cur else None,
            "refused": holder.refused,
            "last_error": holder.last_error,
            "missing_features_policy": missing,
        }
        return JSONResponse(body, status_code=200 if cur else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(req: PredictRequest) -> Any:
        started = time.perf_counter()
        code = "200"
        try:
            # the answer is plain JSON types already: serialized directly, without FastAPI's encoder pass
            return JSONResponse(await batcher.submit(req))
        except MissingFeatures as exc:
            code = "503"
            detail = {"detail": str(exc), "missing_features": exc.names, "policy": missing}
            return JSONResponse(detail, status_code=503, headers={"Retry-After": "60"})
        except InvalidScore as exc:
            code = "500"
            raise HTTPException(500, detail=str(exc)) from exc
        except HTTPException as exc:
            code = str(exc.status_code)
            raise
        except Exception:
            code = "500"  # Feast or Redis down, a bug: FastAPI answers 500, the count says so
            raise
        finally:
            metrics.requests.labels(code).inc()
            metrics.latency.observe(time.perf_counter() - started)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: RequestValidationError) -> Any:
        """FastAPI's own 422 answer, counted (no HTTP middleware: it costs every request a task switch)."""
        metrics.requests.labels("422").inc()
        return await request_validation_exception_handler(request, exc)

    app.state.holder, app.state.metrics, app.state.predictions = holder, metrics, predictions
    return BodyLimit(app, max_body_bytes)


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description="mlplatform model server")
    ap.add_argument("--model-uri", required=True, help="models:/<name>@<alias> (followed) or a fixed model URI")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--poll-seconds", type=float, default=2.0, help="how often the alias is resolved")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10.0, help="the longest a request waits for company")
    ap.add_argument("--missing-features", choices=["reject", "impute"], default="reject")
    ap.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    ap.add_argument("--log-dir", type=Path, default=None, help="where served predictions are logged (Parquet)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: one per core)")
    args = ap.parse_args()
    from mlplatform.logs import configure

    configure("model-server")
    try:
        import torch

        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    except ImportError:  # a model without torch
        pass
    app = create_app(
        args.model_uri,
        args.tracking_uri,
        poll_s=args.poll_seconds,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        missing=args.missing_features,
        max_body_bytes=args.max_body_bytes,
        log_dir=args.log_dir,
    )
    # log_config=None: uvicorn's loggers propagate to the JSON handler instead of installing their own
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False, log_config=None)


if __name__ == "__main__":
    main()
