"""The serving manifests against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are
errors), plus what they promise: a rolling update that never drops below the replica count, readiness on
"model loaded", and pods that run as non-root with a read-only root filesystem and no capabilities."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "docker" / "k8s"
VERSION = "1.31.0"  # the oldest Kubernetes the manifests are meant for (sleep preStop hooks: 1.30+)


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_every_core_manifest_is_valid_for_the_kubernetes_schema():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and not doc["apiVersion"].startswith("serving.kserve.io/"):
                kubernetes_validate.validate(doc, VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    (deploy, *_) = docs("serving.yaml")
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSION, strict=True)


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec["containers"]


def assert_hardened(pod_spec: dict) -> None:
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(pod_spec):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"  # 200 only once a model serves
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert "limits" in c["resources"]


def test_the_deployment_rolls_without_dropping_below_its_replicas_and_is_hardened():
    deploy = next(d for d in docs("serving.yaml") if d["kind"] == "Deployment")
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert deploy["spec"]["replicas"] >= 2
    assert_hardened(deploy["spec"]["template"]["spec"])
    kinds = {d["kind"] for d in docs("serving.yaml")}
    assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"} <= kinds


def test_the_kserve_predictor_is_a_valid_pod_spec_and_is_hardened():
    (isvc,) = docs("serving-kserve.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = isvc["spec"]["predictor"]
    pod_spec = {k: predictor[k] for k in ("containers", "volumes", "securityContext", "serviceAccountName")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    kubernetes_validate.validate(pod, VERSION, strict=True)  # KServe embeds core/v1 PodSpec fields
    assert_hardened(pod_spec)
    assert predictor["minReplicas"] >= 2


def test_the_kpo_account_gets_only_what_the_operator_needs_and_the_trainer_gets_nothing():
    by_kind: dict[str, list[dict]] = {}
    for d in docs("training-rbac.yaml"):
        by_kind.setdefault(d["kind"], []).append(d)
    (role,) = by_kind["Role"]
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert granted == {
        *(("pods", v) for v in ("create", "get", "list", "watch", "patch", "delete")),
        ("pods/log", "get"),
        *(("events", v) for v in ("get", "list", "watch")),
    }
    assert not any("*" in str(rule) for rule in role["rules"])
    assert {"secrets", "pods/exec"}.isdisjoint(res for res, _ in granted)
    (binding,) = by_kind["RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["airflow-kpo"]
    trainer = next(sa for sa in by_kind["ServiceAccount"] if sa["metadata"]["name"] == "mlp-train")
    assert trainer["automountServiceAccountToken"] is False
    assert not any(s["name"] == "mlp-train" for b in by_kind["RoleBinding"] for s in b["subjects"])
    (inventory,) = by_kind["ClusterRole"]  # the pool sync reads node allocatable, and nothing else
    assert inventory["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    (cluster_binding,) = by_kind["ClusterRoleBinding"]
    assert cluster_binding["roleRef"]["name"] == inventory["metadata"]["name"]
    assert [s["name"] for s in cluster_binding["subjects"]] == ["airflow-kpo"]


def test_the_rendered_training_pod_is_hardened_and_valid():
    """The KubernetesPodOperator's own pod (as it would submit it) passes the same checks as the manifests."""
    from kubernetes.client import ApiClient

    from mlplatform.launch.pods import TRAINING_SERVICE_ACCOUNT, training_pod_kwargs

    kw = training_pod_kwargs(task_id="train", gpus=2, profile="h100")
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    pod = KubernetesPodOperator(**kw).build_pod_request_obj(dry_run=True)
    doc = ApiClient().sanitize_for_serialization(pod)
    kubernetes_validate.validate(doc, VERSION, strict=True)
    spec = doc["spec"]
    assert spec["serviceAccountName"] == TRAINING_SERVICE_ACCOUNT
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    writable = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/dev/shm"} <= writable  # noqa: S108
    assert {v["name"]: v["emptyDir"] for v in spec["volumes"]}["dshm"] == {"medium": "Memory"}
