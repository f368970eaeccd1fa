"""A real Kubernetes control plane on loopback, as optional stack services (``mlp up --k8s``, ``MLP_K8S=1``):
etcd, kube-apiserver and kube-scheduler built from ``k8s.io/kubernetes`` through the Go module proxy, and kwok
managing simulated GPU nodes (``docker/k8s/sim/nodes.yaml``). There is no kube-controller-manager: the
``default`` ServiceAccounts are created here, nodes never turn NotReady by themselves (patch the Ready
condition to simulate a failure) and ``TaintNodesByCondition`` is off (nothing would lift its taint).

The binaries (about 12 minutes to build cold on 2 cores) are cached in the shared dist dir, so only the
first start pays the build; ``scripts/build-k8s.sh`` holds a lock, so a build started in the background (the
test target does that) and a start that needs the binaries never build twice.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlplatform.config.settings import Settings
from mlplatform.stack.services import Service, ServiceError, _run

log = logging.getLogger(__name__)

K8S_VERSION = "v1.37.2"
BINARIES = ("etcd", "kube-apiserver", "kube-scheduler", "kwok")
EXEC_USER = "mlp-kwok-exec"  # kwok runs `kubectl exec` on this host as this idle user (see kwok_config)
SIM_DIR = Path(__file__).resolve().parents[3] / "docker" / "k8s" / "sim"
# applied at every start (docker/k8s), in this order
CLUSTER_MANIFESTS = ("priority-classes.yaml", "training-rbac.yaml", "gpu-operator-configs.yaml")
K8S_SERVICES = ("etcd", "kube-apiserver", "kube-scheduler", "kwok")
# Kueue's CRDs, from its Go module (config/components/crd/bases): the API server then validates our
# ClusterQueues and LocalQueues against Kueue's own schema (mlplatform.gpu.kueue); no Kueue controller runs
KUEUE_VERSION = "v0.17.0"
KUEUE_CRDS = ("resourceflavors", "clusterqueues", "localqueues", "workloadpriorityclasses", "cohorts")


def k8s_bin_dir(s: Settings) -> Path:
    return s.dist_dir / "go" / f"k8s-{K8S_VERSION}"


def k8s_built(s: Settings) -> bool:
    return all((k8s_bin_dir(s) / name).exists() for name in BINARIES)


def fetch_k8s(s: Settings, background: bool = False, log_file: Path | None = None) -> Path:
    """Build the control plane's binaries once (the build script locks, so concurrent callers wait for one
    build). ``background``: start the build and return at once (``make test`` overlaps it with the suite)."""
    out = k8s_bin_dir(s)
    if k8s_built(s) and kueue_crds_fetched(s):
        return out
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        raise ServiceError("Go is needed to build the Kubernetes control plane from the Go module proxy")
    try:
        fetch_kueue_crds(s)
    except (ServiceError, OSError, subprocess.TimeoutExpired) as exc:  # the control plane runs without them
        log.warning("Kueue's CRDs not fetched (the queues will not be applied): %s", exc)
    if k8s_built(s):
        return out
    script = s.repo_root / "scripts" / "build-k8s.sh"
    env = {**os.environ, "K8S_VERSION": K8S_VERSION}
    if background:
        log_file = log_file or out.parent / f"k8s-{K8S_VERSION}.build.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as fh:
            subprocess.Popen(  # noqa: S603
                [str(script), str(out)], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return out
    _run([str(script), str(out)], env=env, timeout=3600)
    return out


def kueue_crd_dir(s: Settings) -> Path:
    return s.dist_dir / "go" / f"kueue-{KUEUE_VERSION}-crds"


def kueue_crd_files(s: Settings) -> list[Path]:
    return [kueue_crd_dir(s) / f"kueue.x-k8s.io_{name}.yaml" for name in KUEUE_CRDS]


def kueue_crds_fetched(s: Settings) -> bool:
    return all(path.exists() for path in kueue_crd_files(s))


def fetch_kueue_crds(s: Settings) -> Path:
    """Kueue's CRDs from ``sigs.k8s.io/kueue`` through the Go module proxy (a 4.6 MB module zip), copied
    into the dist dir; a temporary dir renamed into place, so a killed fetch leaves nothing half-written."""
    import json
    import tempfile

    out = kueue_crd_dir(s)
    if kueue_crds_fetched(s):
        return out
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=out.name + ".") as tmp:
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        module = _run([go, "mod", "download", "-json", f"sigs.k8s.io/kueue@{KUEUE_VERSION}"], env=env, cwd=Path(tmp))
        src = Path(json.loads(module)["Dir"]) / "config" / "components" / "crd" / "bases"
        staged = Path(tmp) / "crds"
        staged.mkdir()
        for crd in kueue_crd_files(s):
            shutil.copyfile(src / crd.name, staged / crd.name)
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out


def install_kueue_crds(s: Settings, timeout: float = 60) -> list[str]:
    """Apply Kueue's CRDs (when fetched) and wait until the API server serves them."""
    from kubernetes import client as k8s

    from mlplatform.gpu.kueue import kueue_served

    if not kueue_crds_fetched(s):
        return []
    docs = [d for path in kueue_crd_files(s) for d in load_manifests(path)]
    applied = apply_manifests(s, docs)
    api = api_client(s)
    try:
        ext = k8s.ApiextensionsV1Api(api)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crds = [ext.read_custom_resource_definition(d["metadata"]["name"]) for d in docs]
            established = all(
                any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))
                for crd in crds
            )
            if established and kueue_served(api):
                return applied
            time.sleep(0.3)
    finally:
        api.close()
    raise ServiceError("Kueue's CRDs were applied but the API server does not serve kueue.x-k8s.io/v1beta2")


# ------------------------------------------------------------------------------------------ files


def k8s_dir(s: Settings) -> Path:
    return s.home / "k8s"


def kubeconfig_path(s: Settings) -> Path:
    return k8s_dir(s) / "kubeconfig"


def api_url(s: Settings) -> str:
    return f"https://{s.host}:{s.k8s_api_port}"


def ensure_pki(pki: Path) -> None:
    """A throwaway CA, the API server's certificate (loopback SANs), an admin client certificate
    (``O=system:masters``) and the service-account signing key pair. Made once per state dir."""
    if (pki / "sa.pub").exists():
        return
    tmp = pki.with_name(pki.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kube-apiserver,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    )
    (tmp / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )

    def ssl(*args: str) -> None:
        _run(["openssl", *args])

    def f(name: str) -> str:
        return str(tmp / name)

    ca = ["-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "365"]
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=mlp-sim-ca",
        "-keyout", f("ca.key"), "-out", f("ca.crt"))  # fmt: skip
    for name, subj, ext in (
        ("server", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=admin", "client.ext"),
    ):
        key, csr = f(f"{name}.key"), f(f"{name}.csr")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", subj)
        ssl("x509", "-req", "-in", f(f"{name}.csr"), *ca, "-extfile", f(ext), "-out", f(f"{name}.crt"))
    ssl("genrsa", "-out", f("sa.key"), "2048")
    ssl("rsa", "-in", f("sa.key"), "-pubout", "-out", f("sa.pub"))
    for path in tmp.iterdir():
        if path.suffix in (".key", ".csr"):
            path.chmod(0o600)
    shutil.rmtree(pki, ignore_errors=True)
    tmp.rename(pki)


def init_files(s: Settings) -> Path:
    """The state dir's PKI and admin kubeconfig (``mlp k8s init``; the compose file's ``k8s-init``)."""
    k8s_dir(s).mkdir(parents=True, exist_ok=True)
    ensure_pki(k8s_dir(s) / "pki")
    return write_kubeconfig(s)


def write_kubeconfig(s: Settings) -> Path:
    pki = k8s_dir(s) / "pki"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mlp-sim", "cluster": {"server": api_url(s), "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
            }
        ],
        "contexts": [{"name": "mlp-sim", "context": {"cluster": "mlp-sim", "user": "admin"}}],
        "current-context": "mlp-sim",
    }
    path = kubeconfig_path(s)
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def exec_ids() -> tuple[int, int] | None:
    """The idle user kwok runs exec requests as. KubernetesPodOperator ends its XCom sidecar with
    ``kill -2 $(pgrep -u $(id -u) -f sh)``, which kwok runs on this host: as root it would interrupt every root
    process with "sh" in its command line. So exec runs as a user owning no process, or not at all."""
    try:
        entry = pwd.getpwnam(EXEC_USER)
    except KeyError:
        return None
    res = subprocess.run(["pgrep", "-u", str(entry.pw_uid)], capture_output=True, check=False)  # noqa: S603,S607
    return None if res.returncode == 0 else (entry.pw_uid, entry.pw_gid)


def kwok_config(s: Settings) -> Path:
    """kwok's own node and pod stages (from its module, shipped beside the binary), then ours: pods run for
    ``sim.kwok.x-k8s.io/run-duration`` (default 3 s) and end with ``sim.kwok.x-k8s.io/exit-code``."""
    stages = k8s_bin_dir(s) / "kwok-stages"
    # kwok's node-initialize re-readies any node whose Ready is not True, within a second; ours initializes
    # only a node that has no Ready condition yet, so a node patched NotReady stays NotReady until patched back
    init = yaml.safe_load((stages / "node/fast/node-initialize.yaml").read_text())
    ready = '.status.conditions.[] | select( .type == "Ready" ) | .status'
    init["spec"]["selector"]["matchExpressions"] = [{"key": ready, "operator": "DoesNotExist"}]
    docs = [yaml.safe_dump(init, sort_keys=False)] + [
        (stages / rel).read_text()
        # no node-heartbeat: a heartbeat already queued would re-ready a node patched NotReady, and without a
        # controller-manager nothing reads heartbeats
        for rel in ("pod/fast/pod-ready.yaml", "pod/fast/pod-delete.yaml")
    ]
    ours = (
        (SIM_DIR / "kwok-stages.yaml")
        .read_text()
        .replace("__RUN__", str(k8s_dir(s)))
        .replace("__POD_MS__", str(int(s.k8s_sim_pod_seconds * 1000)))
    )
    docs.append(ours)
    ids = exec_ids()
    if ids:
        (k8s_dir(s) / "exec").mkdir(exist_ok=True)
        docs.append(
            yaml.safe_dump(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterExec",
                    "metadata": {"name": "mlp-exec"},
                    "spec": {
                        "execs": [
                            {
                                "local": {
                                    "workDir": str(k8s_dir(s) / "exec"),
                                    "securityContext": {"runAsUser": ids[0], "runAsGroup": ids[1]},
                                }
                            }
                        ]
                    },
                }
            )
        )
    path = k8s_dir(s) / "kwok.yaml"
    path.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
    log = k8s_dir(s) / "sim-pod.log"  # what every simulated container "prints" (CRI log format)
    if not log.exists():
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        log.write_text(f"{now} stdout F simulated training pod\n")
    return path


# --------------------------------------------------------------------------------------- clients


def api_client(s: Settings) -> Any:
    """A ``kubernetes`` ApiClient for the local control plane (admin)."""
    from kubernetes import config as kconfig

    return kconfig.new_client_from_config(config_file=str(kubeconfig_path(s)))


def _https(s: Settings, path: str, port: int | None = None, auth: bool = True) -> bool:
    pki = k8s_dir(s) / "pki"
    try:
        kwargs: dict[str, Any] = {"verify": str(pki / "ca.crt"), "timeout": 2}
        if auth:
            kwargs["cert"] = (str(pki / "admin.crt"), str(pki / "admin.key"))
        else:
            kwargs["verify"] = False
        with httpx.Client(**kwargs) as client:
            return client.get(f"https://{s.host}:{port or s.k8s_api_port}{path}").text.strip() == "ok"
    except (httpx.HTTPError, OSError):
        return False


def apply_manifests(s: Settings, docs: list[dict[str, Any]], dry_run: bool = False, api: Any = None) -> list[str]:
    """Server-side apply (``kubectl apply --server-side``): each object is validated against the API
    server's schema, and a second apply of the same object changes nothing. Returns ``Kind/name`` of each.
    ``api``: an ApiClient for another cluster than the local control plane."""
    from kubernetes import dynamic

    client = dynamic.DynamicClient(api or api_client(s))
    applied = []
    for doc in docs:
        if not doc:
            continue
        resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc["metadata"]
        kwargs: dict[str, Any] = {"field_manager": "mlplatform", "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        client.server_side_apply(resource, body=doc, name=meta["name"], namespace=meta.get("namespace"), **kwargs)
        applied.append(f"{doc['kind']}/{meta['name']}")
    return applied


def load_manifests(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def sim_nodes() -> list[dict[str, Any]]:
    return load_manifests(SIM_DIR / "nodes.yaml")


def bootstrap_cluster(s: Settings) -> None:
    """What a controller-manager and an installer would have done: the namespaces and their ``default``
    ServiceAccounts, the simulated nodes, the priority classes and the KPO's RBAC."""
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(api_client(s))
    for ns in ("default", "mlplatform"):
        if ns != "default":
            apply_manifests(s, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
        apply_manifests(
            s, [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}]
        )
    for name in CLUSTER_MANIFESTS:
        apply_manifests(s, load_manifests(s.repo_root / "docker" / "k8s" / name))
    install_kueue_crds(s)  # the GPU pool sync then applies the queues (mlplatform.gpu.kueue)
    existing = {n.metadata.name for n in api.list_node().items}
    for node in sim_nodes():
        if node["metadata"]["name"] not in existing:  # a node's status is set at registration (a POST)
            api.create_node(node)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(node_ready(n) for n in api.list_node().items):
            return
        time.sleep(0.3)
    raise ServiceError("the simulated nodes did not turn Ready (kwok's node-initialize stage)")


def node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


# -------------------------------------------------------------------------------------- services


def k8s_services(s: Settings) -> list[Service]:
    bins = k8s_bin_dir(s)
    home = k8s_dir(s)
    pki = home / "pki"

    def prepare_etcd() -> None:
        if not k8s_built(s):
            fetch_k8s(s)
        init_files(s)

    etcd = Service(
        name="etcd",
        ports=[s.k8s_etcd_port, s.k8s_etcd_port + 1],
        argv=lambda: [
            str(bins / "etcd"),
            "--name=mlp",
            f"--data-dir={home / 'etcd'}",
            f"--listen-client-urls=http://{s.host}:{s.k8s_etcd_port}",
            f"--advertise-client-urls=http://{s.host}:{s.k8s_etcd_port}",
            f"--listen-peer-urls=http://{s.host}:{s.k8s_etcd_port + 1}",
            f"--initial-advertise-peer-urls=http://{s.host}:{s.k8s_etcd_port + 1}",
            f"--initial-cluster=mlp=http://{s.host}:{s.k8s_etcd_port + 1}",
            "--listen-metrics-urls=",
        ],
        health=lambda: _etcd_healthy(s),
        url=f"http://{s.host}:{s.k8s_etcd_port}",
        prepare=prepare_etcd,
        optional=True,
        wanted=lambda: s.k8s,
        start_timeout=120,
    )
    apiserver = Service(
        name="kube-apiserver",
        ports=[s.k8s_api_port],
        argv=lambda: [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://{s.host}:{s.k8s_etcd_port}",
            f"--bind-address={s.host}",
            f"--advertise-address={s.host}",
            f"--secure-port={s.k8s_api_port}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/12",  # kwok's pod IPs are 10.0.0.x
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=TaintNodesByCondition",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
        ],
        health=lambda: _https(s, "/readyz"),
        url=api_url(s),
        optional=True,
        wanted=lambda: s.k8s,
        start_timeout=120,
    )
    scheduler = Service(
        name="kube-scheduler",
        ports=[s.k8s_scheduler_port],
        argv=lambda: [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kubeconfig_path(s)}",
            f"--authentication-kubeconfig={kubeconfig_path(s)}",
            f"--authorization-kubeconfig={kubeconfig_path(s)}",
            f"--bind-address={s.host}",
            f"--secure-port={s.k8s_scheduler_port}",
            "--leader-elect=false",
        ],
        health=lambda: _https(s, "/healthz", port=s.k8s_scheduler_port, auth=False),
        url=f"https://{s.host}:{s.k8s_scheduler_port}",
        optional=True,
        wanted=lambda: s.k8s,
    )
    kwok = Service(
        name="kwok",
        ports=[s.k8s_kwok_port],
        argv=lambda: [
            str(bins / "kwok"),
            f"--kubeconfig={kubeconfig_path(s)}",
            f"--config={kwok_config(s)}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--node-ip={s.host}",
            f"--node-port={s.k8s_kwok_port}",
            f"--server-address={s.host}:{s.k8s_kwok_port}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
        ],
        health=lambda: _https(s, "/healthz", port=s.k8s_kwok_port, auth=False),
        url=f"https://{s.host}:{s.k8s_kwok_port}",
        after_start=lambda: bootstrap_cluster(s),
        optional=True,
        wanted=lambda: s.k8s,
    )
    return [etcd, apiserver, scheduler, kwok]


def _etcd_healthy(s: Settings) -> bool:
    try:
        return bool(httpx.get(f"http://{s.host}:{s.k8s_etcd_port}/health", timeout=2).json().get("health") == "true")
    except (httpx.HTTPError, ValueError):
        return False
