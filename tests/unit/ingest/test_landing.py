"""The landing zone's manifest chain and the resume plan: the decisions that make landing exactly once."""

from __future__ import annotations

import threading

import pytest

from mlplatform.ingest.landing import ConcurrentIngestError, Landing, Range, plan_resume


def rng(start: int, nxt: int, rows: int = 0, run: str = "r1", partition: int = 0, **kw) -> Range:  # type: ignore[no-untyped-def]
    return Range("t", partition, start, nxt, rows=rows, dead=0, run_id=run, group="g", **kw)


# ---------------------------------------------------------------------------------------------- plan


def test_fresh_partition_starts_at_the_committed_offset_or_the_log_start():
    p = plan_resume([], None, low=5)
    assert (p.read_from, p.land_from, p.dlq_from, p.gap) == (5, 5, 5, None)
    p = plan_resume([], 40, low=5)
    assert (p.read_from, p.land_from, p.dlq_from) == (40, 40, 40)


def test_normal_resume_after_a_committed_range():
    p = plan_resume([rng(0, 100)], committed=100, low=0)
    assert (p.read_from, p.land_from, p.dlq_from, p.gap, p.warnings) == (100, 100, 100, None, ())


def test_crash_between_landing_and_commit_rereads_only_for_dead_letters():
    """The manifest holds [100, 250) but the transaction that commits 250 never ran: re-read 100..249,
    land none of it again, re-send only its dead letters."""
    p = plan_resume([rng(0, 100), rng(100, 250)], committed=100, low=0)
    assert (p.read_from, p.land_from, p.dlq_from) == (100, 250, 100)
    assert p.warnings == ()


def test_crash_before_the_first_commit_ever():
    p = plan_resume([rng(0, 80)], committed=None, low=0)
    assert (p.read_from, p.land_from, p.dlq_from) == (0, 80, 0)


def test_expired_group_offsets_trust_the_manifest():
    p = plan_resume([rng(0, 80), rng(80, 90)], committed=None, low=0)
    assert (p.read_from, p.land_from, p.dlq_from) == (90, 90, 90)
    assert "expired" in p.warnings[0]


def test_group_moved_forward_by_hand_is_honoured_and_recorded_as_a_gap():
    p = plan_resume([rng(0, 50)], committed=70, low=0)
    assert (p.read_from, p.land_from, p.dlq_from) == (70, 70, 70)
    assert p.gap is not None
    assert p.gap[:2] == (50, 70)


def test_group_rewound_by_hand_does_not_land_twice():
    p = plan_resume([rng(0, 50), rng(50, 90)], committed=10, low=0)
    assert (p.land_from, p.dlq_from) == (90, 90)
    assert "behind landed data" in p.warnings[0]


def test_offsets_lost_to_retention_become_a_gap():
    p = plan_resume([rng(0, 50)], committed=50, low=75)
    assert (p.read_from, p.land_from) == (75, 75)
    assert p.gap is not None
    assert p.gap[:2] == (50, 75)
    assert "retention" in p.gap[2]


# ------------------------------------------------------------------------------------------- landing


def test_commit_range_links_the_file_and_creates_the_entry_once(tmp_path):
    land = Landing(tmp_path, "t")
    tmp = land.tmp_data_path(0)
    tmp.write_bytes(b"parquet bytes")
    first = land.commit_range(rng(0, 10, rows=10), tmp)
    assert first.file == "partition=0/00000000000000000000-00000000000000000009.parquet"
    assert (tmp_path / "t" / first.file).read_bytes() == b"parquet bytes"
    assert not tmp.exists()
    assert [r.start for r in land.chain(0)] == [0]
    assert land.head(0) == 10
    with pytest.raises(ConcurrentIngestError, match="offsets from 0"):
        land.commit_range(rng(0, 12, rows=12), None)
    assert land.chain(0)[0].next == 10  # the first writer's entry stands


def test_an_existing_file_of_the_same_range_is_never_replaced(tmp_path):
    land = Landing(tmp_path, "t")
    target = tmp_path / "t" / land.data_name(0, 0, 9)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"landed by a killed attempt")
    tmp = land.tmp_data_path(0)
    tmp.write_bytes(b"same records, written again")
    land.commit_range(rng(0, 10, rows=10), tmp)
    assert target.read_bytes() == b"landed by a killed attempt"


def test_racing_writers_for_one_start_offset_produce_one_entry(tmp_path):
    land = Landing(tmp_path, "t")
    outcomes: list[str] = []

    def write(n: int) -> None:
        try:
            land.commit_range(rng(0, 10 + n, rows=1), None)
            outcomes.append("won")
        except ConcurrentIngestError:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert len(land.chain(0)) == 1


def test_batches_claim_unvalidated_ranges_and_files_follow_the_verdict(tmp_path):
    land = Landing(tmp_path, "t")
    for start, nxt, rows in ((0, 10, 10), (10, 20, 0), (20, 30, 10)):
        land.commit_range(rng(start, nxt, rows=rows, file=f"f{start}" if rows else None), None)
    land.commit_range(rng(0, 5, rows=5, partition=1, file="g0"), None)
    assert [r.key for r in land.unvalidated()] == ["0:0", "0:20", "1:0"]  # no rows, nothing to validate
    land.record_batch("validated", "b1", land.unvalidated()[:2])
    land.record_batch("rejected", "b2", land.unvalidated())
    assert land.unvalidated() == []
    assert sorted(p.name for p in land.validated_files()) == ["f0", "f20"]
    with pytest.raises(FileExistsError):
        land.record_batch("validated", "b1", [])


def test_sweep_removes_only_old_temporary_files(tmp_path):
    import os
    import time

    land = Landing(tmp_path, "t")
    old, new = land.tmp_data_path(0), land.tmp_data_path(0)
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert land.sweep_tmp(0) == 1
    assert not old.exists()
    assert new.exists()
