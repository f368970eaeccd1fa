"""Bodies of the ingest and validate tasks shared by ``ingest_events``, ``validate_landing`` and
``ml_pipeline``: the library calls plus the Airflow semantics around them (endpoints from connections,
which failures a retry cannot fix). Airflow is imported lazily: this runs inside tasks only."""

from __future__ import annotations

from typing import Any


def lane_pool(topic: str) -> str:
    """The Airflow pool that fences one writer per topic and group: one slot, shared by every DAG."""
    import re

    return "ingest_" + re.sub(r"[^A-Za-z0-9_.-]", "_", topic)


def ingest(topic: str, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Land the topic (endpoints from the Airflow connections). A DLQ alert fails the task without retries:
    the offsets are committed, so a retry would find nothing to change."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlplatform.ingest.kafka import DeadLetterAlert
    from mlplatform.pipeline.endpoints import from_airflow
    from mlplatform.pipeline.stages import ingest_topic

    try:
        return ingest_topic(
            topic,
            run_id,
            max_records=int(params.get("max_records", 0)),
            max_seconds=float(params.get("ingest_max_seconds", 0)),
            dlq_max_share=float(params.get("dlq_max_share", 0.05)),
            parallelism=int(params.get("ingest_parallelism", 0)),
            endpoints=from_airflow(),
        )
    except DeadLetterAlert as exc:
        raise AirflowFailException(str(exc)) from exc


def deploy(swap_timeout_s: float = 300, smoke: bool = True) -> dict[str, Any]:
    """Serve the champion. A version the server refused fails the task without retries: the alias is rolled
    back by then, so a retry would find the old version serving and go green, hiding the refusal."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlplatform.pipeline.stages import deploy as rollout
    from mlplatform.serving.deploy import ModelRefused

    try:
        return rollout(swap_timeout_s=swap_timeout_s, smoke=smoke)
    except ModelRefused as exc:
        raise AirflowFailException(str(exc)) from exc


def validate(topic: str, run_id: str) -> dict[str, Any]:
    """Validate the topic's unclaimed landed ranges. A failed batch fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlplatform.pipeline.links import record_docs
    from mlplatform.pipeline.stages import validate_batch
    from mlplatform.validation.suites import ValidationFailed

    try:
        result = validate_batch({"topic": topic}, run_id)
    except ValidationFailed as exc:  # the data will not change on retry: stop the chain now
        if exc.report is not None:
            record_docs(exc.report.docs)
        raise AirflowFailException(str(exc)) from exc
    if result.get("docs"):
        result["docs_url"] = record_docs(result["docs"])
    return result


def redrive(params: dict[str, Any]) -> dict[str, Any]:
    """Re-validate quarantined batches (``redrive_batch`` DAG). Succeeds, emitting the validated Asset,
    when something was released; skips when the quarantine is empty; fails when batches stayed and none
    was released, or when the named batch is unknown or fails again."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from mlplatform.pipeline.links import record_docs
    from mlplatform.pipeline.stages import redrive_batches
    from mlplatform.validation.suites import ValidationFailed

    try:
        result = redrive_batches(
            str(params.get("batch") or ""),
            str(params.get("topic") or ""),
            {k: float(v) for k, v in (params.get("overrides") or {}).items()},
        )
    except (LookupError, ValueError, ValidationFailed) as exc:
        if isinstance(exc, ValidationFailed) and exc.report is not None:
            record_docs(exc.report.docs)
        raise AirflowFailException(str(exc)) from exc
    log = logging.getLogger(__name__)
    for i, r in enumerate(result["released"]):
        log.info("released %s/%s as %s (%d rows)", r["topic"], r["from"], r["batch"], r["rows"])
        # every page is logged; the extra link opens the last one's
        r["docs_url"] = record_docs(r["docs"], keep=i == len(result["released"]) - 1)
    for r in result["stayed"]:
        log.warning("still in quarantine: %s/%s\n%s", r["topic"], r["batch"], r["reason"])
    if not result["released"]:
        if result["stayed"]:
            raise AirflowFailException(f"{len(result['stayed'])} batches failed again and stay in quarantine")
        raise AirflowSkipException("the quarantine is empty")
    return result
