"""The GPU quota: which Airflow pool a run's GPU task takes, and how big each pool is.

* One pool per GPU profile and team share (``gpu_<profile>__<team>``), sized from the committed quota file
  and the real inventory; what no team holds is the profile's shared pool (``gpu_<profile>``). A task takes
  ``pool_slots`` = its GPUs, so Airflow never starts more GPU work than a team's share, and the shares never
  add up to more than the GPUs that exist.
* A run's ``gpu_profile``, ``gpus``, ``team`` and ``priority`` decide the pool, the slots and the priority
  weight at run time: ``task_instance_mutation_hook`` (``airflow_local_settings.py``) calls
  :func:`request_for_conf` with the run's conf when the scheduler creates the task instance.
* Priority: ``priority_weight`` = :data:`PRIORITY_WEIGHTS` (high 100, normal 10, low 1). Airflow starts the
  highest weight first among the tasks that wait for the same pool (then the oldest). A low-priority task is
  never starved by other teams: its team's share is its own pool, which no other team's task can take. It
  waits only while higher-priority work of its own team keeps that share busy, which the team decides; every
  GPU task ends (the pod has its timeouts), so when the team's high and normal work drains, the low task runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PRIORITY_WEIGHTS = {"high": 100, "normal": 10, "low": 1}
PRIORITY_CLASSES = {level: f"mlp-training-{level}" for level in PRIORITY_WEIGHTS}
GPU_POOL_PREFIX = "gpu_"


class GpuQuotaError(RuntimeError):
    """A GPU ask no pool can ever satisfy (the message names the profile, the count and the pool's size)."""


def load_quota(path: Path) -> dict[str, dict[str, int]]:
    """``{team: {profile: gpus}}`` from the quota file; profiles must exist, shares are whole and >= 0. Read
    again when the file changes, so a long-running scheduler routes by the same file the sync sizes from."""
    return _load_quota(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load_quota(path: Path, mtime_ns: int) -> dict[str, dict[str, int]]:
    from mlplatform.launch.pods import gpu_profiles

    doc = yaml.safe_load(path.read_text()) or {}
    teams: dict[str, dict[str, int]] = {}
    for team, shares in (doc.get("teams") or {}).items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", str(team)):
            raise ValueError(f"{path}: team name {team!r} must be lowercase letters, digits and '-'")
        for profile, gpus in (shares or {}).items():
            if profile not in gpu_profiles():
                raise ValueError(f"{path}: team {team!r} has a share of unknown GPU profile {profile!r}")
            if not isinstance(gpus, int) or gpus < 0:
                raise ValueError(f"{path}: team {team!r}'s share of {profile!r} must be a whole number >= 0")
        teams[str(team)] = {str(p): int(g) for p, g in (shares or {}).items()}
    return teams


def profile_pool(profile: str) -> str:
    from mlplatform.launch.pods import gpu_profiles

    return str(gpu_profiles()[profile]["pool"])


def team_pool(profile: str, team: str) -> str:
    return f"{profile_pool(profile)}__{team}"


def pool_for(profile: str, team: str, quota: Mapping[str, Mapping[str, int]]) -> str:
    """The team's own pool where it has a share of the profile, else the profile's shared pool."""
    return team_pool(profile, team) if quota.get(team, {}).get(profile, 0) > 0 else profile_pool(profile)


def split_shares(available: int, shares: Mapping[str, int]) -> dict[str, int]:
    """Shrink the shares in proportion to fit ``available`` (largest remainder, ties by name): the result
    never sums to more than ``available`` nor gives a team more than its share."""
    total = sum(shares.values())
    if total <= available:
        return dict(shares)
    if total == 0:
        return dict.fromkeys(shares, 0)
    exact = {team: available * n / total for team, n in shares.items()}
    out = {team: math.floor(x) for team, x in exact.items()}
    left = available - sum(out.values())
    for team in sorted(shares, key=lambda t: (-(exact[t] - out[t]), t))[:left]:
        out[team] += 1
    return out


@dataclass(frozen=True)
class PoolPlan:
    name: str
    slots: int
    description: str
    profile: str = ""
    team: str | None = None  # None: the profile's shared pool


def plan_pools(inventory: Mapping[str, int], quota: Mapping[str, Mapping[str, int]], source: str) -> list[PoolPlan]:
    """Every GPU pool with its size: the team shares of each profile (shrunk to the inventory) and the
    profile's shared remainder. ``inventory``: allocatable GPUs (or slices) per profile."""
    from mlplatform.launch.pods import gpu_profiles

    plans = []
    for profile in gpu_profiles():
        have = int(inventory.get(profile, 0))
        shares = {team: s[profile] for team, s in quota.items() if s.get(profile, 0) > 0}
        granted = split_shares(have, shares)
        for team, slots in sorted(granted.items()):
            plans.append(
                PoolPlan(
                    team_pool(profile, team),
                    slots,
                    f"{team}'s share of {profile}: {slots} of {shares[team]} ({have} allocatable, {source})",
                    profile,
                    team,
                )
            )
        rest = have - sum(granted.values())
        note = f"{profile} not held by a team: {rest} of {have} ({source})"
        plans.append(PoolPlan(profile_pool(profile), rest, note, profile))
    return plans


@dataclass(frozen=True)
class GpuRequest:
    """What one run's training task asks for, resolved from its conf."""

    profile: str
    gpus: int
    team: str
    priority: str
    pool: str
    resource: str
    node_selector: dict[str, str] = field(default_factory=dict)

    cpu_per_gpu: int = 8
    memory_gib_per_gpu: int = 64

    def host_share(self) -> dict[str, str]:
        """CPU and memory in proportion to the GPUs (the profile's per-GPU share of its node), so every GPU a
        pool counts can also be scheduled: a pod never waits for CPU or memory on a node with a free GPU."""
        return {"cpu": str(self.cpu_per_gpu * self.gpus), "memory": f"{self.memory_gib_per_gpu * self.gpus}Gi"}

    @property
    def priority_weight(self) -> int:
        return PRIORITY_WEIGHTS[self.priority]

    @property
    def priority_class(self) -> str:
        return PRIORITY_CLASSES[self.priority]

    def labels(self) -> dict[str, str]:
        """Pod labels: team and profile, and the Kueue LocalQueue of the team (a Kueue cluster admits the pod
        against the same share: mlplatform.gpu.kueue)."""
        from mlplatform.gpu.kueue import queue_name

        team_share = self.pool == team_pool(self.profile, self.team)
        return {
            "mlplatform/team": self.team,
            "mlplatform/gpu-profile": self.profile.replace("_", "-"),
            "mlplatform/priority": self.priority,
            "kueue.x-k8s.io/queue-name": queue_name(self.profile, self.team if team_share else None),
            "kueue.x-k8s.io/priority-class": self.priority_class,
        }


def request_for_conf(conf: Mapping[str, Any], quota_file: Path) -> GpuRequest:
    """The GPU ask of a run: its conf's ``gpu_profile``, ``gpus``, ``team`` and ``priority`` (the pipeline's
    defaults where the conf is silent). Raises ValueError on a value no profile or level knows."""
    from mlplatform.launch.pods import gpu_profiles
    from mlplatform.pipeline.params import PipelineConf

    defaults = PipelineConf.model_fields
    profile = str(conf.get("gpu_profile", defaults["gpu_profile"].default))
    gpus = int(conf.get("gpus", defaults["gpus"].default))
    team = str(conf.get("team", defaults["team"].default))
    priority = str(conf.get("priority", defaults["priority"].default))
    if profile not in gpu_profiles():
        raise ValueError(f"unknown GPU profile {profile!r}; known: {sorted(gpu_profiles())}")
    if priority not in PRIORITY_WEIGHTS:
        raise ValueError(f"unknown priority {priority!r}; known: {sorted(PRIORITY_WEIGHTS)}")
    prof = gpu_profiles()[profile]
    return GpuRequest(
        profile=profile,
        gpus=max(gpus, 1),
        team=team,
        priority=priority,
        pool=pool_for(profile, team, load_quota(quota_file)),
        resource=str(prof["resource"]),
        node_selector={str(k): str(v) for k, v in prof["node_selector"].items()},
        cpu_per_gpu=int(prof.get("cpu_per_gpu", 8)),
        memory_gib_per_gpu=int(prof.get("memory_gib_per_gpu", 64)),
    )


def check_fits(req: GpuRequest, pool_slots: Mapping[str, int], largest_node: Mapping[str, int] | None) -> None:
    """Refuse an ask no pool can ever satisfy: more GPUs than the pool has slots at full inventory, or more
    than any single node has (a pod runs on one node)."""
    size = pool_slots.get(req.pool)
    if size is None:
        raise GpuQuotaError(f"GPU profile {req.profile!r}: pool {req.pool!r} does not exist (run `mlp gpu sync`)")
    if req.gpus > size:
        raise GpuQuotaError(
            f"GPU profile {req.profile!r} with gpus={req.gpus} can never run for team {req.team!r}: pool "
            f"{req.pool!r} has {size} slot(s)"
        )
    if largest_node is not None and req.gpus > largest_node.get(req.profile, 0):
        raise GpuQuotaError(
            f"GPU profile {req.profile!r} with gpus={req.gpus} can never be scheduled: the largest node has "
            f"{largest_node.get(req.profile, 0)} {req.resource} allocatable, and a pod runs on one node"
        )
