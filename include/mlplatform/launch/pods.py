"""Pod specs for the training container (cluster profile): KubernetesPodOperator arguments that request
``nvidia.com/gpu`` (or a MIG slice), take ``pool_slots`` = GPUs from the profile's pool, and carry the
node selector and tolerations of the GPU node pool. No torch here: this is the launch side only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROFILES_FILE = Path(__file__).with_name("gpu_profiles.yaml")
DEFAULT_IMAGE = "ghcr.io/mlplatform/training:0.1.0"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TRAINER_UID = 10001  # the `trainer` user of docker/training.Dockerfile
TRAINING_SERVICE_ACCOUNT = "mlp-train"  # no API rights, no token (docker/k8s/training-rbac.yaml)
# the only writable paths of the read-only root filesystem: scratch, the HF/torch caches, and shared memory
# for DataLoader workers and NCCL (a pod's default /dev/shm is 64 MiB, too small for either)
SCRATCH_MOUNTS = {"tmp": "/tmp", "cache": "/home/trainer/.cache", "dshm": "/dev/shm"}  # noqa: S108


@lru_cache(maxsize=1)
def gpu_profiles() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(PROFILES_FILE.read_text())
    return data


def training_command(gpus: int, config: str, overrides: dict[str, Any]) -> tuple[list[str], list[str]]:
    """cmds/arguments: torchrun with one process per GPU (DDP in one pod), else plain python."""
    args = ["-m", "training", "--config", config]
    for key, value in overrides.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    if gpus > 1:
        return ["torchrun"], ["--standalone", f"--nproc-per-node={gpus}", *args]
    return ["python"], args


def training_pod_kwargs(
    *,
    task_id: str,
    gpus: int,
    profile: str = "h100",
    image: str = DEFAULT_IMAGE,
    namespace: str = "mlplatform",
    config: str = "/app/training/configs/gpu_bert_base.yaml",
    overrides: dict[str, Any] | None = None,
    team: str = "support-ml",
    cpu: str = "8",
    memory: str = "64Gi",
    get_logs: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for KubernetesPodOperator (pool, pool_slots, resources, placement): the parse-time
    default, which ``GpuPodOperator`` and the mutation hook replace with each run's own GPU ask.

    Deferrable (the GPU slot is held while the triggerer waits: GPU pools count deferred tasks), with a
    schedule timeout for GPU node scale-up; ``reattach_on_restart`` finds the pod of a killed worker's try
    by its labels instead of starting a second one; ``delete_pod`` on finish leaves no pod behind."""
    from kubernetes.client import models as k8s

    from mlplatform.config.settings import get_settings
    from mlplatform.gpu.quota import PRIORITY_CLASSES, load_quota, pool_for

    if profile not in gpu_profiles():
        raise ValueError(f"unknown GPU profile {profile!r}; known: {sorted(gpu_profiles())}")
    if gpus < 1:
        raise ValueError("a cluster training pod needs gpus >= 1")
    prof = gpu_profiles()[profile]
    cmds, arguments = training_command(gpus, config, overrides or {})
    limits = {prof["resource"]: str(gpus), "cpu": cpu, "memory": memory}
    volumes = [
        k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory" if name == "dshm" else None))
        for name in SCRATCH_MOUNTS
    ]
    mounts = [k8s.V1VolumeMount(name=name, mount_path=path) for name, path in SCRATCH_MOUNTS.items()]
    return {
        "task_id": task_id,
        "name": "mlp-train",
        "namespace": namespace,
        "image": image,
        "cmds": cmds,
        "arguments": arguments,
        "labels": {
            "app.kubernetes.io/part-of": "mlplatform",
            "mlplatform/team": team,
            "mlplatform/gpu-profile": profile.replace("_", "-"),
        },
        "container_resources": k8s.V1ResourceRequirements(requests=limits, limits=limits),
        "node_selector": dict(prof["node_selector"]),
        "tolerations": [k8s.V1Toleration(**GPU_TOLERATION)],
        "pool": pool_for(profile, team, load_quota(get_settings().gpu_quota_file)),
        "pool_slots": gpus,
        "priority_class_name": PRIORITY_CLASSES["normal"],
        "get_logs": get_logs,
        "deferrable": True,
        "reattach_on_restart": True,
        "on_finish_action": "delete_pod",
        "startup_timeout_seconds": 900,
        "schedule_timeout_seconds": 1800,  # Pending while a GPU node scales up
        "env_vars": {"MLP_PROFILE": "cluster", "PYTHONUNBUFFERED": "1", "HOME": "/home/trainer"},
        "service_account_name": TRAINING_SERVICE_ACCOUNT,
        "automount_service_account_token": False,
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=TRAINER_UID,
            run_as_group=TRAINER_UID,
            fs_group=TRAINER_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        "volumes": volumes,
        "volume_mounts": mounts,
    }
