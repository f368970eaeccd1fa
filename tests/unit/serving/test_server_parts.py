"""The model server's parts that need no model: the micro-batcher, the body limit, the score check and the
prediction log."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pandas as pd
import pytest

from mlplatform.serving.server import Batcher, BodyLimit, PredictionLog, Refused, _valid


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer():
    calls: list[list[int]] = []

    def work(items: list[int]) -> list[object]:
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    async def main() -> list[object]:
        b = Batcher(work, max_batch=4, max_wait_s=0.05)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(6)), return_exceptions=True)
        finally:
            await b.stop()

    out = asyncio.run(main())
    assert [o if not isinstance(o, Exception) else str(o) for o in out] == [0, 10, 20, "bad 3", 40, 50]
    assert [len(c) for c in calls] == [4, 2]  # at most max_batch per call, the rest in the next


def test_a_failing_batch_fails_each_of_its_requests():
    def work(items: list[int]) -> list[object]:
        raise RuntimeError("feature store down")

    async def main() -> list[object]:
        b = Batcher(work, max_batch=8, max_wait_s=0.01)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        finally:
            await b.stop()

    assert [str(e) for e in asyncio.run(main())] == ["feature store down"] * 3


async def echo(scope, receive, send):  # a minimal ASGI app that reads the whole body
    body = b""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise RuntimeError("client went away")
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"bytes": len(body)}).encode()})


@pytest.mark.parametrize(
    ("size", "chunked", "code"), [(100, False, 200), (2000, False, 413), (2000, True, 413), (900, True, 200)]
)
def test_the_body_limit_answers_413_before_reading_an_oversized_body(size, chunked, code):
    app = BodyLimit(echo, max_bytes=1000)

    async def main() -> httpx.Response:
        async def chunks():
            for i in range(0, size, 100):
                yield b"x" * min(100, size - i)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/predict", content=chunks() if chunked else b"x" * size)

    r = asyncio.run(main())
    assert r.status_code == code, r.text
    if code == 413:
        assert "1000" in r.json()["detail"]
    else:
        assert r.json() == {"bytes": size}


def test_scores_must_be_finite_probabilities_one_per_row():
    assert _valid([0.0, 0.5, 1.0], 3) == [True, True, True]
    assert _valid([math.nan, 1.5, -0.1, 0.2], 4) == [False, False, False, True]
    with pytest.raises(Refused, match="2 scores for 3 rows"):
        _valid([0.1, 0.2], 3)


def test_the_prediction_log_writes_whole_files_by_day(tmp_path):
    log = PredictionLog(tmp_path, flush_rows=3)
    rows = [{"served_at": f"2026-06-01T10:00:0{i}+00:00", "model_version": "2", "p": i / 10} for i in range(5)]
    log.add(rows[:2])
    assert list(tmp_path.rglob("*.parquet")) == []  # under flush_rows: still in memory
    log.add(rows[2:])
    assert log.flush() == 0  # the add that reached flush_rows wrote them
    (written,) = tmp_path.glob("date=2026-06-01/*.parquet")
    assert pd.read_parquet(written)["p"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert not list(tmp_path.rglob("*.tmp"))
    assert PredictionLog(None).flush() == 0  # no log dir: nothing kept


def test_the_batcher_survives_a_batch_that_breaks_it():
    def work(items: list[int]) -> list[object]:
        return [1] if items[0] == 0 else [i for i in items]  # batch of 2 answered with 1 result: a bug

    async def main() -> tuple[list[object], object]:
        b = Batcher(work, max_batch=2, max_wait_s=0.05)
        await b.start()
        try:
            broken = await asyncio.gather(b.submit(0), b.submit(1), return_exceptions=True)
            return broken, await asyncio.wait_for(b.submit(7), 5)  # the next request is still served
        finally:
            await b.stop()

    broken, later = asyncio.run(main())
    assert all("1 results for a batch of 2" in str(e) for e in broken)
    assert later == 7


def test_non_numeric_scores_are_invalid_not_a_crash():
    assert _valid([None, "x", 0.3], 3) == [False, False, True]


def test_a_flush_across_midnight_files_each_row_under_its_own_day(tmp_path):
    log = PredictionLog(tmp_path, flush_rows=100)
    log.add([{"served_at": "2026-06-01T23:59:59+00:00", "v": 1}, {"served_at": "2026-06-02T00:00:01+00:00", "v": 2}])
    assert log.flush() == 2
    assert [pd.read_parquet(f)["v"].tolist() for f in sorted(tmp_path.glob("date=*/*.parquet"))] == [[1], [2]]
