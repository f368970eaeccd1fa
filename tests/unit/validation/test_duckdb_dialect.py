"""The DuckDB dialect GX validates batches through: the two things stock GX 1.x + duckdb_engine get wrong
(GX issue #11579) are right here, on the real GX SQL engine and a real DuckDB."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from mlplatform.validation import duckdb_dialect


def test_rows_survive_the_connection_being_closed_before_they_are_fetched():
    duckdb_dialect.register()
    engine = sa.create_engine(duckdb_dialect.URL)
    with engine.connect() as conn:  # what GX's execute_query does: run, close, then fetch
        result = conn.execute(sa.text("SELECT 41 + 1 AS answer"))
    assert result.fetchall() == [(42,)]


def test_gx_runs_a_regex_a_mean_of_booleans_and_uniqueness_through_it(tmp_path):
    import great_expectations as gx

    duckdb_dialect.register()
    path = tmp_path / "b.parquet"
    pd.DataFrame({"id": ["C000001", "C000002", "bad", "C000002"], "flag": [True, False, True, True]}).to_parquet(path)
    from mlplatform.validation.suites import _booleans_as_integers

    ctx = gx.get_context(mode="ephemeral")
    source = ctx.data_sources.add_sql("t", connection_string=duckdb_dialect.URL, create_temp_table=False)
    query = _booleans_as_integers(f"SELECT * FROM read_parquet(['{path}'])")
    batch = source.add_query_asset("b", query=query).add_batch_definition_whole_table("all").get_batch()
    regex = batch.validate(gx.expectations.ExpectColumnValuesToMatchRegex(column="id", regex="^C[0-9]{6}$"))
    mean = batch.validate(gx.expectations.ExpectColumnMeanToBeBetween(column="flag", min_value=0.7, max_value=0.8))
    unique = batch.validate(gx.expectations.ExpectColumnValuesToBeUnique(column="id"))
    assert not regex.success
    assert regex.result["unexpected_count"] == 1
    assert regex.result["partial_unexpected_list"] == ["bad"]
    assert mean.success, mean.result  # 3 of 4
    assert mean.result["observed_value"] == 0.75
    assert not unique.success
    assert unique.result["unexpected_count"] == 2
