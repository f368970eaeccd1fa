"""Feast definitions for the reference use case: the customer entity, its daily stats and the feature
service the escalation model trains and serves on. The offline table is written by
spark_jobs/customer_features.py."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64
from feast.value_type import ValueType

_default_home = Path(__file__).resolve().parents[1] / ".mlp"
FEATURES_URI = os.environ.get(
    "MLP_FEATURES_URI", str(Path(os.environ.get("MLP_HOME", _default_home)) / "data" / "features" / "customer_daily")
)

customer = Entity(
    name="customer", join_keys=["customer_id"], value_type=ValueType.STRING, description="A customer who opens tickets"
)

customer_daily_source = FileSource(
    name="customer_daily_source",
    path=FEATURES_URI,  # the Spark job's output directory
    file_format=ParquetFormat(),  # the DuckDB offline store reads only a source it knows to be Parquet
    timestamp_field="event_timestamp",
)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=45),
    schema=[
        Field(name="tickets_7d", dtype=Int64),
        Field(name="tickets_30d", dtype=Int64),
        Field(name="high_priority_share_30d", dtype=Float64),
        Field(name="avg_body_len_30d", dtype=Float64),
        Field(name="is_enterprise", dtype=Int64),
    ],
    source=customer_daily_source,
    online=True,
    tags={"team": "support-ml"},
)

escalation_features = FeatureService(
    name="escalation_features",
    features=[customer_stats],
    description="Customer context for the ticket escalation model",
)

OBJECTS = [customer, customer_daily_source, customer_stats, escalation_features]
