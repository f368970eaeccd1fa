"""The local model server: ``models:/<name>@champion`` behind a small FastAPI app that looks the customer's
features up in Feast's online store before predicting. Run: ``python -m mlplatform.serving.server``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    customer_id: str = Field(min_length=1, max_length=64)
    subject: str = Field(max_length=1000)
    body: str = Field(max_length=20000)


def served_feature_service(tracking_uri: str, run_id: str | None, default: str) -> str:
    """The FeatureService the model was registered with (the run's ``feast.feature_service`` tag, set by
    the register step). A model registered before per-version services falls back to ``default``."""
    from mlflow import MlflowClient

    from mlplatform.pipeline.stages import FEATURE_SERVICE_TAG

    tag = MlflowClient(tracking_uri).get_run(run_id).data.tags.get(FEATURE_SERVICE_TAG) if run_id else None
    if not tag:
        log.warning("run %s has no %s tag: using the base service %s", run_id, FEATURE_SERVICE_TAG, default)
    return tag or default


def create_app(model_uri: str, tracking_uri: str) -> Any:
    import mlflow
    import pandas as pd
    from fastapi import FastAPI, HTTPException

    from mlplatform.config.settings import get_settings
    from mlplatform.features.store import get_store

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    s = get_settings()
    store = get_store(s, serving=True)  # registry refreshed in the background, never in a request
    meta = model.metadata
    service_name = served_feature_service(tracking_uri, meta.run_id, s.feature_service)
    feature_service = store.get_feature_service(service_name)  # fails the start if the service is missing
    log.info("serving %s (run %s) with feature service %s", model_uri, meta.run_id, service_name)
    app = FastAPI(title="mlplatform model server")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_uri": model_uri, "run_id": meta.run_id, "feature_service": service_name}

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        feats = store.get_online_features(features=feature_service, entity_rows=[{"customer_id": req.customer_id}])
        row: dict[str, Any] = {k: v[0] for k, v in feats.to_dict().items()}
        missing = [k for k, v in row.items() if v is None and k != "customer_id"]
        feats_row = {k: (float(v) if v is not None else float("nan")) for k, v in row.items() if k != "customer_id"}
        frame = pd.DataFrame([{**feats_row, "subject": req.subject, "body": req.body}])
        try:
            out = model.predict(frame)
        except Exception as exc:  # noqa: BLE001 - report model errors to the caller
            raise HTTPException(status_code=422, detail=f"model could not score the request: {exc}") from exc
        prob = float(out["escalation_probability"].iloc[0])
        return {
            "customer_id": req.customer_id,
            "escalation_probability": round(prob, 4),
            "escalate": bool(prob >= 0.5),
            "features": {k: v for k, v in row.items() if k != "customer_id"},
            "missing_features": missing,
            "model_uri": model_uri,
        }

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    uvicorn.run(create_app(args.model_uri, args.tracking_uri), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
