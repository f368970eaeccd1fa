"""The landing zone of a topic: immutable Parquet files named by the offsets they cover, and a manifest that
says exactly which offsets have landed.

Layout under ``<landing root>/<topic>/``::

    partition=<p>/<start>-<end>.parquet   the records of offsets start..end (inclusive), never rewritten
    _manifest/partition=<p>/<start>.json  one entry per landed range (a *chain*: each starts where the last ended)
    _validated/<batch>.json               ranges (and their files) that passed validation together
    _rejected/<batch>.json                the quarantine: ranges that failed validation, with the report; never
                                          read downstream
    _redriven/<batch>.json                a quarantined batch that passed again (its ranges are now in a
                                          ``_validated/<batch>.redrive-<id>.json``), kept for the record

Offsets are zero-padded to 20 digits, as Kafka names its own segment files. A range may hold no file
(every record dead-lettered, or only transaction markers) but it still has an entry, so the chain of a
partition tiles every offset it has consumed, without gaps or overlaps.

Entries are created with ``link()``, which fails when the name exists: two writers that race for the same
start offset cannot both land (the loser fails and its task retries), and a landed range is never
replaced. Data files are fsynced, then linked into place, then the entry is fsynced: an entry never
points at a file that is not durable.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
WIDTH = 20


class ConcurrentIngestError(RuntimeError):
    """Another writer landed the same range first (two ingests of one topic at once): retry."""


@dataclass(frozen=True)
class Range:
    """One manifest entry: offsets [start, next) of one partition, and what became of them."""

    topic: str
    partition: int
    start: int
    next: int
    rows: int
    dead: int
    run_id: str
    group: str
    kind: str = "data"  # data | gap (offsets that were skipped, with the reason in `note`)
    file: str | None = None  # relative to the topic's landing dir
    dead_by_kind: dict[str, int] = field(default_factory=dict)
    schema_ids: list[int] = field(default_factory=list)
    bytes: int = 0
    first_record: int | None = None  # offsets of the first and last record that landed or was dead-lettered
    last_record: int | None = None
    note: str = ""
    landed_at: str = ""

    @property
    def end(self) -> int:
        """Last offset covered (inclusive)."""
        return self.next - 1

    @property
    def key(self) -> str:
        return f"{self.partition}:{self.start}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Range:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_exclusive(target: Path, data: bytes) -> bool:
    """Write ``data`` durably at ``target`` unless it exists. True when this call created it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, target)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return created


class Landing:
    """The landing zone of one topic."""

    def __init__(self, root: Path, topic: str) -> None:
        self.root = Path(root)
        self.topic = topic
        self.dir = self.root / topic

    # ---------------------------------------------------------------------------------------- paths

    def data_dir(self, partition: int) -> Path:
        return self.dir / f"partition={partition}"

    def manifest_dir(self, partition: int) -> Path:
        return self.dir / "_manifest" / f"partition={partition}"

    def data_name(self, partition: int, start: int, end: int) -> str:
        return f"partition={partition}/{start:0{WIDTH}d}-{end:0{WIDTH}d}.parquet"

    def tmp_data_path(self, partition: int) -> Path:
        d = self.data_dir(partition)
        d.mkdir(parents=True, exist_ok=True)
        return d / f".landing-{uuid.uuid4().hex}.parquet.tmp"

    def path_of(self, rng: Range) -> Path | None:
        return self.dir / rng.file if rng.file else None

    # ---------------------------------------------------------------------------------------- reads

    def partitions(self) -> list[int]:
        base = self.dir / "_manifest"
        if not base.exists():
            return []
        return sorted(int(p.name.split("=", 1)[1]) for p in base.iterdir() if p.name.startswith("partition="))

    def chain(self, partition: int) -> list[Range]:
        """The partition's entries in offset order."""
        d = self.manifest_dir(partition)
        if not d.exists():
            return []
        out = [Range.from_dict(json.loads(p.read_text())) for p in d.glob("*.json")]
        return sorted(out, key=lambda r: r.start)

    def ranges(self) -> list[Range]:
        return [r for p in self.partitions() for r in self.chain(p)]

    def head(self, partition: int) -> int | None:
        chain = self.chain(partition)
        return chain[-1].next if chain else None

    # ---------------------------------------------------------------------------------------- writes

    def commit_range(self, rng: Range, data_tmp: Path | None) -> Range:
        """Make a landed range durable: link its fsynced data file into place, then create its manifest
        entry exclusively. Raises ConcurrentIngestError when another writer already holds this start."""
        if data_tmp is not None:
            fsync_file(data_tmp)
            name = self.data_name(rng.partition, rng.start, rng.end)
            target = self.dir / name
            try:
                os.link(data_tmp, target)
            except FileExistsError:
                # An earlier attempt landed the same offsets but died before its entry: the records are the
                # same (Kafka offsets are immutable), so the file that is there stays.
                log.info("landing file %s already exists; keeping it", target)
            data_tmp.unlink(missing_ok=True)
            fsync_dir(target.parent)
            rng = Range(**{**rng.to_dict(), "file": name, "bytes": target.stat().st_size})
        rng = Range(**{**rng.to_dict(), "landed_at": datetime.now(UTC).isoformat()})
        entry = self.manifest_dir(rng.partition) / f"{rng.start:0{WIDTH}d}.json"
        if not write_exclusive(entry, json.dumps(rng.to_dict(), indent=1).encode()):
            raise ConcurrentIngestError(
                f"{self.topic} partition {rng.partition}: offsets from {rng.start} were landed by another writer "
                "at the same time (two ingests of this topic and group ran at once); nothing was duplicated, retry"
            )
        return rng

    # ------------------------------------------------------------------------------------ batches

    def _batch_keys(self, kind: str) -> set[str]:
        d = self.dir / f"_{kind}"
        keys: set[str] = set()
        if d.exists():
            for p in d.glob("*.json"):
                keys.update(json.loads(p.read_text()).get("ranges", []))
        return keys

    def unvalidated(self) -> list[Range]:
        """Landed data ranges that no batch has validated or rejected yet (oldest first): the next batch."""
        done = self._batch_keys("validated") | self._batch_keys("rejected")
        return [r for r in self.ranges() if r.kind == "data" and r.rows > 0 and r.key not in done]

    def record_batch(self, kind: str, batch_id: str, ranges: list[Range], **details: Any) -> Path:
        """Record a validated or rejected batch (immutable: a new file per batch; readers take the union)."""
        assert kind in ("validated", "rejected"), kind
        target = self.dir / f"_{kind}" / f"{batch_id}.json"
        doc = {
            "batch": batch_id,
            "topic": self.topic,
            "ranges": [r.key for r in ranges],
            "files": [r.file for r in ranges if r.file],
            "rows": sum(r.rows for r in ranges),
            **details,
        }
        if not write_exclusive(target, json.dumps(doc, indent=1, default=str).encode()):
            raise FileExistsError(f"batch {batch_id} is already recorded as {kind}")
        return target

    def batches(self, kind: str) -> list[dict[str, Any]]:
        """The records of the ``validated`` or ``rejected`` batches, oldest first."""
        d = self.dir / f"_{kind}"
        docs = [json.loads(p.read_text()) for p in d.glob("*.json")] if d.exists() else []
        return sorted(docs, key=lambda doc: str(doc.get("validated_at", "")))

    def quarantined(self) -> list[dict[str, Any]]:
        """The records of the batches in quarantine (failed validation, not re-driven), oldest first."""
        return self.batches("rejected")

    def quarantined_batch(self, batch_id: str) -> tuple[dict[str, Any], list[Range]]:
        """The quarantine record of ``batch_id`` and its ranges. KeyError when it is not in quarantine."""
        path = self.dir / "_rejected" / f"{batch_id}.json"
        if not path.exists():
            raise KeyError(batch_id)
        doc = json.loads(path.read_text())
        keys = set(doc.get("ranges", []))
        return doc, [r for r in self.ranges() if r.key in keys]

    def release(self, batch_id: str, ranges: list[Range], new_batch: str, **details: Any) -> Path:
        """Let a re-validated quarantined batch flow on: record its ranges as validated (``new_batch``), then
        move the quarantine record to ``_redriven/``. A crash in between leaves the ranges both validated and
        rejected, which reads as rejected (nothing flows): the re-drive is simply run again."""
        recorded = self.record_batch("validated", new_batch, ranges, redriven_from=batch_id, **details)
        target = self.dir / "_redriven" / f"{batch_id}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.dir / "_rejected" / f"{batch_id}.json", target)
        except FileNotFoundError:
            pass  # a concurrent re-drive of the same batch moved it first: the outcome is the same
        fsync_dir(target.parent)
        fsync_dir(self.dir / "_rejected")
        return recorded

    def validated_files(self) -> list[Path]:
        """The data files of every validated range (what the feature job reads)."""
        keys = self._batch_keys("validated") - self._batch_keys("rejected")
        return [self.dir / r.file for r in self.ranges() if r.key in keys and r.file]

    def sweep_tmp(self, partition: int, older_than_s: float = 3600.0) -> int:
        """Remove temporary files that a killed writer left behind (only old ones: a live writer's are new)."""
        import time

        removed = 0
        for d in (self.data_dir(partition), self.manifest_dir(partition)):
            if not d.exists():
                continue
            for p in d.glob(".*.tmp"):
                try:
                    if time.time() - p.stat().st_mtime > older_than_s:
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


# ------------------------------------------------------------------------------------------- resume plan


@dataclass(frozen=True)
class ResumePlan:
    """Where one partition's ingest resumes.

    * ``land_from``: records at or after it are landed (before it they already are: the manifest says so);
    * ``dlq_from``: poison records at or after it are dead-lettered (before it they already were: the
      group's committed offset, which moves only in the same Kafka transaction as the DLQ writes);
    * ``read_from``: where to start reading, the lower of the two;
    * ``gap``: offsets [a, b) that will never land, with the reason, recorded as a manifest entry.
    """

    read_from: int
    land_from: int
    dlq_from: int
    gap: tuple[int, int, str] | None = None
    warnings: tuple[str, ...] = ()


def plan_resume(chain: list[Range], committed: int | None, low: int) -> ResumePlan:
    """Decide where to resume from the manifest chain, the committed offset and the log start offset.

    The manifest entry of a range is written before the transaction that dead-letters its poison records
    and commits its offset. So the only legitimate state where the commit is behind the manifest is a
    crash between the two, and then the commit sits exactly at the last entry's start: that range's dead
    letters are re-sent, its records are not landed again. Anything else is an outside change (offsets
    reset by an operator, or expired), handled as documented below.
    """
    warnings: list[str] = []
    if not chain:
        start = committed if committed is not None else low
        land_from = dlq_from = start
    else:
        last, head = chain[-1], chain[-1].next
        land_from = head
        if committed is None:
            # Never committed (a crash before the first commit) or the group's offsets expired
            # (offsets.retention.minutes): with one entry it is the former, so its dead letters are re-sent.
            dlq_from = last.start if len(chain) == 1 else head
            if len(chain) > 1:
                warnings.append("the group has no committed offset (expired?): resuming from the manifest")
        elif committed >= head:
            dlq_from = committed
            land_from = committed  # committed > head: an operator moved the group forward: honour the skip
        elif committed == last.start:
            dlq_from = last.start  # crash between landing the last range and its commit
        else:
            dlq_from = head
            warnings.append(
                f"the group's offset {committed} is behind landed data ending at {head - 1} (reset by hand?): "
                "landed ranges are not landed again and their dead letters not re-sent"
            )
    gap: tuple[int, int, str] | None = None
    head_now = chain[-1].next if chain else None
    if head_now is not None and land_from > head_now:
        gap = (head_now, land_from, "offsets skipped: the group was moved forward outside ingestion")
    read_from = min(land_from, dlq_from)
    if read_from < low:
        lost_to = low
        if land_from < low:
            reason = f"offsets {land_from}..{low - 1} were deleted by retention before they could land"
            warnings.append(reason)
            gap = (land_from if gap is None else gap[0], low, reason)
            land_from = low
        dlq_from = max(dlq_from, low)
        read_from = lost_to
    return ResumePlan(read_from, land_from, dlq_from, gap, tuple(warnings))
