#!/usr/bin/env bash
# Installs everything mlplatform needs on a fresh Debian machine: Debian packages (PostgreSQL, Redis, wrk,
# Prometheus and its pushgateway, Java 17, Maven, Chromium for the UI test), the Python environment (.venv, from constraints.txt) and
# the Kafka broker jars and Apicurio Registry (from Maven Central). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v wrk >/dev/null || need+=(wrk)  # bench/serving.py's load generator
command -v prometheus >/dev/null || need+=(prometheus)  # the stack's metrics server
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)  # metrics of task processes
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# kwok (the local Kubernetes control plane's simulated kubelet, `mlp up --k8s`) runs exec requests on this
# host; it runs them as this idle system user, never as root (see include/mlplatform/stack/k8s.py)
if [ "$(id -u)" -eq 0 ] && ! id mlp-kwok-exec >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin mlp-kwok-exec
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
command -v uv >/dev/null || "$PY" -m pip install -q uv
if [ ! -x .venv/bin/python ]; then
  uv venv -q .venv --python "$PY"
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (CI images often set it), every process
  # (Airflow task, ingest worker) would otherwise compile its imports again at start.
  uv pip install -q --compile-bytecode --python .venv/bin/python -e ".[train,dev]" -c constraints.txt
  rm -f .venv/.installed-*; touch "$stamp"
fi

.venv/bin/python -m compileall -q -j 0 include training dags plugins >/dev/null || true

# Service distributions from Maven Central (the Kafka broker jars, Apicurio Registry) and the Go module proxy
# (statsd_exporter) into the shared dist dir (.mlp/dist, or $MLP_DIST_DIR), with the same code `mlp up` uses.
.venv/bin/mlp fetch
echo "bootstrap done: $(.venv/bin/python --version), $(java -version 2>&1 | head -1)"
