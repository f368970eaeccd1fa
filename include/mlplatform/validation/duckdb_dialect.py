"""The SQLAlchemy dialect Great Expectations validates landed batches through: DuckDB (``duckdb_engine``)
over the batch's Parquet files, where they lie, with nothing copied.

Why DuckDB: GX's pandas engine spends most of a 1M-row batch outside the checks (object strings, a Python
call per row for a regex or a length, an MD5 fingerprint of the whole frame); GX's SQL engine sends each
expectation to the database as a query, and DuckDB runs those queries vectorised (architecture note 45).

Two things stand between stock GX 1.x and ``duckdb_engine`` (GX issue #11579), and this dialect is where
they are settled, instead of in GX:

* GX runs a query, closes the connection, then fetches the rows. SQLAlchemy rolls the connection back at
  close, and a DuckDB connection keeps only one pending result, so the rows were gone (GX then fails every
  expectation with ``IndexError``). Here each DBAPI cursor is its own DuckDB cursor (a connection to the
  same database), so a rollback of the connection leaves the cursor's result alone. We only read.
* GX picks its SQL per dialect by name, and knows no DuckDB: without a name it knows, it has no regex at
  all. DuckDB speaks PostgreSQL's SQL (``duckdb_engine`` compiles with SQLAlchemy's PostgreSQL dialect,
  and ``~`` is a regex match in both), so the dialect is named ``postgresql`` for GX's choice of SQL.
  Registered as ``mlp_duckdb``: the connection string is ``mlp_duckdb:///:memory:``.
"""

from __future__ import annotations

from typing import Any

from duckdb_engine import ConnectionWrapper, CursorWrapper, Dialect

NAME = "mlp_duckdb"
URL = f"{NAME}:///:memory:"


class _Cursor(CursorWrapper):
    """duckdb_engine's cursor, closed for real: its own DuckDB cursor (a connection) and result go when
    SQLAlchemy closes it, which it does once the rows are fetched, not when GX closes the connection."""

    def __init__(self, cursor: Any, connection: Any) -> None:
        super().__init__(cursor, connection)
        self._own = cursor

    def close(self) -> None:
        self._own.close()


class _Connection(ConnectionWrapper):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self._raw = conn

    def cursor(self) -> CursorWrapper:
        return _Cursor(self._raw.cursor(), self)


class BatchDialect(Dialect):  # type: ignore[misc]
    name = "postgresql"  # for GX's choice of SQL (see the module's docstring); the driver is DuckDB
    supports_statement_cache = False

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        conn = super().connect(*cargs, **cparams)
        raw = conn._ConnectionWrapper__c  # duckdb_engine's wrapper keeps the DuckDB connection private
        raw.execute("SET GLOBAL TimeZone = 'UTC'")  # as UTC whatever the host's zone (GLOBAL: its cursors too)
        return _Connection(raw)


def register() -> None:
    """Make ``mlp_duckdb://`` a SQLAlchemy URL in this process (idempotent; the package's entry point does
    the same for any process that has it installed)."""
    from sqlalchemy.dialects import registry

    registry.register(NAME, __name__, "BatchDialect")
