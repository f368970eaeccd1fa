"""The message filter of the Kafka AssetWatcher that starts ``ingest_events`` when events arrive.

Airflow's ``MessageQueueTrigger`` (scheme ``kafka``: the Kafka provider's ``AwaitMessageTrigger``) reads
the topic with its own consumer group (connection ``kafka_watch``) and calls ``new_events`` on each
message: a truthy answer becomes an Asset event, which schedules the ingest DAG. The answer is about the
*ingestion* group, not the message: it fires whenever ingestion is behind on the topic, whichever message
the watcher happens to look at, so a watcher that lags behind its topic still reacts to new data at once.
It never commits for the ingestion group; the events are collapsed by the scheduler into one queued run.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
_consumers: dict[tuple[str, str, str], Any] = {}


def ingestion_lag(kafka: dict[str, Any], topic: str, group: str) -> int:
    """Records on ``topic`` beyond ``group``'s committed offsets (read_committed end offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    def cached(isolation: str) -> Any:
        key = (str(sorted(kafka.items())), group, isolation)
        if key not in _consumers:
            conf = {**kafka, "group.id": group, "enable.auto.commit": False, "isolation.level": isolation}
            _consumers[key] = Consumer(conf)
        return _consumers[key]

    # end offsets as read_committed sees them (the last stable offset: open upstream transactions are not
    # lag), committed offsets without waiting on a killed ingest's pending transactional commit (KIP-447)
    consumer, offsets = cached("read_committed"), cached("read_uncommitted")
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    lag = 0
    for tp in offsets.committed(tps, timeout=10):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10, cached=False)
        lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
    return lag


def close_consumers() -> None:
    """Close the consumers ``ingestion_lag`` keeps (a process that outlives the cluster: a test session)."""
    while _consumers:
        _consumers.popitem()[1].close()


def new_events(message: Any, *, topic: str, group: str, kafka_conn_id: str = "kafka_default") -> dict[str, Any] | None:
    """apply_function of the watcher: an Asset event payload when ingestion is behind on ``topic``."""
    from airflow.sdk import BaseHook

    from mlplatform.pipeline.endpoints import kafka_from_extra

    kafka = kafka_from_extra(BaseHook.get_connection(kafka_conn_id).extra_dejson)
    lag = ingestion_lag(kafka, topic, group)
    if not lag:
        return None
    log.info("%s: %d records not ingested yet by %s: starting ingestion", topic, lag, group)
    return {"topic": topic, "lag": lag, "seen": f"{message.topic()}/{message.partition()}/{message.offset()}"}
