"""Exactly-once ingestion against the real broker and schema registry, under the conditions it exists for:
kill -9 at any point, a same-run retry, a broker restart, transactional upstream producers, a backlog
larger than a run's budget, evolved and foreign schemas, poison, and two runs at once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Producer

from mlplatform.ingest import poison, schemas
from mlplatform.ingest.kafka import DeadLetterAlert

from .lanes import Lane, make_lane

REPORTS = Path(__file__).resolve().parents[2] / ".mlp-test" / "reports"


@pytest.fixture
def lane(settings, tmp_path) -> Lane:
    return make_lane(settings, tmp_path)


def _poisoned(lane: Lane, n: int, seed: int, rate: float) -> list[tuple[bytes, bytes]]:
    good = lane.tickets(n, seed)
    values, _ = poison.interleave(good, rate, seed, good[0][1], lane.foreign(good[0][1]))
    return values


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _manifest_entries(lane: Lane) -> int:
    return sum(1 for _ in (lane.landing.dir / "_manifest").glob("partition=*/*.json"))


def _kill_moment(rng: random.Random, i: int) -> dict[str, float]:
    """Where run ``i`` dies. A third die at a random moment of start-up or first fetch; the others right
    after their k-th range became durable (its manifest entry exists), plus 0-250 ms: the window where the
    range is landed but its transaction (DLQ records and offsets) may not be committed yet. Moments tied
    to the run's own progress, not to the wall clock, so a faster or slower machine kills as many runs."""
    if i % 3 == 0:
        return {"after_s": rng.uniform(0.3, 2.5)}
    return {"after_ranges": rng.randint(1, 2), "jitter_s": rng.uniform(0.0, 0.25)}


def test_kill9_at_random_points_then_a_final_run_lands_every_offset_once(lane):
    """20 runs of `mlp ingest`, each killed with SIGKILL at a random moment while more data arrives, then one
    run to the end: the landing plus the DLQ hold every offset of the topic exactly once."""
    rng = random.Random(20261124)
    logs = REPORTS / "kill9" / lane.topic
    logs.mkdir(parents=True, exist_ok=True)
    lane.produce(_poisoned(lane, 7500, seed=2, rate=0.01))  # a backlog for the first killed runs
    kills = []
    for i in range(20):
        lane.produce(_poisoned(lane, 1500, seed=100 + i, rate=0.01))
        moment = _kill_moment(rng, i)
        landed_before = _manifest_entries(lane)
        with open(logs / f"run-{i:02d}.log", "wb") as log:
            proc = subprocess.Popen(  # noqa: S603
                lane.cli("--chunk-records", "700", "--row-group-records", "200", "--run-id", f"kill-{i}"),
                env=lane.env,
                stdout=log,
                stderr=log,
            )
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 120:
            if "after_s" in moment and time.monotonic() - started >= moment["after_s"]:
                break
            if "after_ranges" in moment and _manifest_entries(lane) >= landed_before + moment["after_ranges"]:
                time.sleep(moment["jitter_s"])
                break
            time.sleep(0.005)
        record = {"run": i, **{k: round(v, 3) for k, v in moment.items()}}
        family = _tree(proc.pid)
        if proc.poll() is not None:  # it finished first
            kills.append({**record, "killed": False, "rc": proc.returncode})
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the workers die with their parent (PR_SET_PDEATHSIG): nothing of the killed run lives on
        gone, alive = psutil.wait_procs(family[1:], timeout=10)
        assert not alive, f"workers outlived the killed run: {alive}"
        kills.append({**record, "killed": True, "at_s": round(time.monotonic() - started, 2), "processes": len(family)})
    REPORTS.mkdir(parents=True, exist_ok=True)
    report = REPORTS / "kill9.json"
    report.write_text(json.dumps({"kills": kills}, indent=1))
    final = lane.run_cli("--chunk-records", "700", "--run-id", "final")
    (logs / "final.log").write_text(final.stdout + final.stderr)
    assert final.returncode == 0, final.stderr[-3000:]
    counts = lane.assert_exactly_once()
    assert json.loads(final.stdout.strip().splitlines()[-1])["lag"] == 0
    report.write_text(json.dumps({"kills": kills, "counts": counts}, indent=1))
    assert sum(k["killed"] for k in kills) >= 15, kills  # the runs really were killed mid-way
    # a run that got to its end succeeded, although its predecessor died holding an open transaction
    assert all(k["rc"] == 0 for k in kills if not k["killed"]), kills


def test_a_retry_of_the_same_run_after_its_commit_loses_nothing(lane):
    lane.produce(lane.tickets(900, seed=2))
    first = lane.ingest("run-x")
    assert first["records"] == 900
    files = sorted(p for r in lane.landing.ranges() if r.file for p in [lane.landing.dir / r.file])
    again = lane.ingest("run-x")  # an Airflow retry, or a clear of the task, after it committed
    assert again["records"] == 900  # the run's records, from the manifest: the batch still validates
    assert again["this_attempt"]["records"] == 0
    assert sorted(p for r in lane.landing.ranges() if r.file for p in [lane.landing.dir / r.file]) == files
    assert all(f.exists() for f in files)
    lane.produce(lane.tickets(100, seed=3))
    assert lane.ingest("run-x")["records"] == 1000
    lane.assert_exactly_once()


def test_broker_killed_and_restarted_mid_ingest_then_the_retry_completes(lane, stack):
    from mlplatform.stack import process

    lane.produce(lane.tickets(60_000, seed=4))
    kafka = stack.service("kafka")
    proc = subprocess.Popen(  # noqa: S603
        lane.cli("--chunk-records", "3000", "--run-id", "restart"),
        env=lane.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4.0)
    rec = process.read_pid(stack.pid_file(kafka))
    assert rec is not None
    psutil.Process(rec.pid).kill()  # kill -9 of the broker
    time.sleep(2.0)
    stack.up(only=["kafka"])
    out, err = proc.communicate(timeout=600)
    retry = lane.run_cli("--run-id", "restart", timeout=600)  # the task's retry
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert json.loads(retry.stdout.strip().splitlines()[-1])["records"] == 60_000
    lane.assert_exactly_once()


def test_only_committed_records_of_a_transactional_producer_land_and_the_run_ends(lane):
    tickets = lane.tickets(40, seed=5)
    p = Producer({**lane.kafka, "transactional.id": f"upstream-{lane.topic}"})
    p.init_transactions(30)
    for batch, commit in ((tickets[:10], True), (tickets[10:20], False), (tickets[20:30], True)):
        p.begin_transaction()
        for key, value in batch:
            p.produce(lane.topic, key=key, value=value, partition=0)
        p.flush(30)  # written to the log, then committed or aborted
        (p.commit_transaction if commit else p.abort_transaction)(30)
    p.begin_transaction()  # left open while we ingest: the run must end at the last stable offset
    for key, value in tickets[30:]:
        p.produce(lane.topic, key=key, value=value, partition=0)
    p.flush(30)
    started = time.monotonic()
    first = lane.ingest("txn-1")
    assert time.monotonic() - started < 60
    assert first["records"] == 20
    p.commit_transaction(30)
    second = lane.ingest("txn-2")
    assert second["records"] == 10
    assert second["lag"] == 0
    counts = lane.assert_exactly_once()
    assert counts == {"on_topic": 30, "landed": 30, "dead_lettered": 0}  # 40 produced, 10 aborted


def _peak_memory(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run a command; the peak of its process tree's summed PSS, sampled every 50 ms."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            total = 0
            for p in _tree(proc.pid):
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate(timeout=600)
    stop.set()
    t.join()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), peak


def test_a_backlog_drains_over_several_runs_with_bounded_memory(lane):
    lane.produce(lane.tickets(50_000, seed=6))
    tune = ["--chunk-records", "5000", "--row-group-records", "1000", "--parallelism", "1"]
    small, small_peak = _peak_memory(lane.cli(*tune, "--max-records", "8000", "--run-id", "b0"), lane.env)
    assert small.returncode == 0, small.stderr[-3000:]
    first = json.loads(small.stdout.strip().splitlines()[-1])
    assert first["records"] == 8000
    assert first["lag"] == 42_000
    runs, lag = [first], first["lag"]
    while lag:
        r = lane.run_cli(*tune, "--max-records", "15000", "--run-id", f"b{len(runs)}")
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        assert runs[-1]["records"] <= 15_000
        lag = runs[-1]["lag"]
        assert len(runs) <= 5
    assert [r["records"] for r in runs] == [8000, 15_000, 15_000, 12_000]
    # memory does not grow with what a run reads: 5x the records, the same peak (within noise)
    lane.produce(lane.tickets(40_000, seed=7))
    big, big_peak = _peak_memory(lane.cli(*tune, "--run-id", "b-all"), lane.env)
    assert big.returncode == 0, big.stderr[-3000:]
    assert json.loads(big.stdout.strip().splitlines()[-1])["records"] == 40_000
    assert big_peak < 1.3 * small_peak, (big_peak, small_peak)
    lane.assert_exactly_once()


def test_avro_serializer_records_of_v1_and_v2_land_together(lane):
    v1, v2 = lane.tickets(50, seed=8, version=1), lane.tickets(50, seed=9, version=2)
    mixed = [x for pair in zip(v1, v2, strict=True) for x in pair]
    p = Producer(lane.kafka)
    for key, value in mixed:
        p.produce(lane.topic, key=key, value=value, partition=1)  # one batch, both versions interleaved
    p.flush(30)
    result = lane.ingest("mixed")
    assert result["records"] == 100
    assert result["dead_lettered"] == 0
    (rng,) = [r for r in lane.landing.ranges() if r.rows]
    assert rng.schema_ids == sorted(lane.ids[f"{lane.topic}-value"])  # registry-assigned ids, both versions
    import pyarrow.parquet as pq

    t = pq.read_table(lane.landing.dir / rng.file)
    langs = t.column("language").to_pylist()
    assert langs[0::2] == ["en"] * 50  # v1 records read with today's contract: the default
    assert set(langs[1::2]) <= {"en", "de", "fr", "es"}
    assert set(t.column("_schema_id").to_pylist()) == set(lane.ids[f"{lane.topic}-value"])
    # and the mixed batch passes the tickets' GX gate, so the evolution flows on to the features
    from mlplatform.validation.suites import read_files, validate_dataframe

    report = validate_dataframe(read_files([lane.landing.dir / rng.file]), "support.tickets")
    assert report.success, report.summary()
    assert report.rows == 100


def test_an_incompatible_contract_change_is_refused_by_the_registry(lane, tmp_path):
    spec = schemas.subject_for_topic(lane.topic, lane.schema_dir)
    bad = json.loads(spec.schema_str())
    bad["fields"].append({"name": "region", "type": "string"})  # no default: old records cannot be read
    (lane.schema_dir / "ticket_event.v3.avsc").write_text(json.dumps(bad))
    doc = json.loads((lane.schema_dir / "subjects.yaml").read_text())
    doc[f"{lane.topic}-value"]["versions"].append("ticket_event.v3.avsc")
    (lane.schema_dir / "subjects.yaml").write_text(json.dumps(doc))
    problems = schemas.check_against(lane.registry, lane.schema_dir)
    assert len(problems) == 1
    assert "ticket_event.v3.avsc" in problems[0]
    assert "BACKWARD" in problems[0]
    with pytest.raises(schemas.SchemaContractError, match="region"):
        schemas.register_all(lane.registry, lane.schema_dir)
    assert schemas.client(lane.registry).get_versions(f"{lane.topic}-value") == [1, 2]  # nothing registered


def test_mlp_schemas_check_refuses_an_incompatible_change_before_deploy(tmp_path, settings):
    """The CI step: the repository's contracts pass; an incompatible edit fails, naming subject and field."""
    import shutil
    import sys

    from mlplatform.config.settings import REPO_ROOT

    ok = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "schemas", "check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "schemas"
    shutil.copytree(schemas.SCHEMA_DIR, broken)
    v2 = json.loads((broken / "ticket_event.v2.avsc").read_text())
    next(f for f in v2["fields"] if f["name"] == "priority")["type"] = "string"  # int -> string: incompatible
    (broken / "ticket_event.v2.avsc").write_text(json.dumps(v2))
    bad = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "schemas", "check", "--schema-dir", str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    text = " ".join((bad.stdout + bad.stderr).split())
    assert bad.returncode == 1, text
    assert "support.tickets-value" in text
    assert "priority" in text


def test_every_poison_class_goes_to_the_dlq_once_with_its_reason_and_the_alert_fires(lane):
    good = lane.tickets(30, seed=10)
    bad = {kind: poison.poison_value(kind, good[0][1], lane.foreign(good[0][1])) for kind in poison.KINDS}
    lane.produce([*good[:15], *((k.encode(), v) for k, v in bad.items()), (b"tomb", None), *good[15:]])
    with pytest.raises(DeadLetterAlert) as alert:  # 5 of 35 records is 14%: over the 5% default
        lane.ingest("poison")
    message = str(alert.value)
    for kind in ("bad_magic", "unknown_schema_id", "bad_body", "wrong_subject", "tombstone"):
        assert kind in message
    assert "5 of 35 records" in message
    # committed before the alert: a retry lands nothing new and dead-letters nothing twice
    with pytest.raises(DeadLetterAlert):
        lane.ingest("poison")
    dead = {d["key"]: d for d in lane.dead_letters()}
    assert len(dead) == 5
    for kind, decode_kind in poison.KINDS.items():
        assert dead[kind.encode()]["kind"] == decode_kind
        assert dead[kind.encode()]["reason"]
    assert dead[b"tomb"]["kind"] == "tombstone"
    assert "registered under support.outcomes-value" in dead[b"wrong_subject"]["reason"]
    assert lane.ingest("poison", dlq_max_share=0.5)["dead_lettered"] == 5
    counts = lane.assert_exactly_once()
    assert counts == {"on_topic": 35, "landed": 30, "dead_lettered": 5}


def test_records_zero_with_a_non_empty_dlq_is_never_green(lane):
    lane.produce([(b"k", b"not avro at all")])
    with pytest.raises(DeadLetterAlert, match="1 of 1 records"):
        lane.ingest("only-poison", dlq_max_share=1.0)


def test_two_runs_at_once_never_land_a_range_twice(lane):
    lane.produce(_poisoned(lane, 30_000, seed=11, rate=0.005))
    args = ("--chunk-records", "1000", "--row-group-records", "500")
    procs = [
        subprocess.Popen(  # noqa: S603
            lane.cli(*args, "--run-id", f"twin-{i}"),
            env=lane.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    final = lane.run_cli(*args, "--run-id", "after-twins")
    assert final.returncode == 0, (codes, final.stderr[-2000:])
    lane.assert_exactly_once()
