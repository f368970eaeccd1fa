# mlplatform: the two README commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV  := .venv/bin
EVENTS ?= 2000

.PHONY: setup up down status demo test k8s-prebuild test-fast lint lock bench-train bench-dags bench-ingest bench-feast-online bench-feast-offline bench-serving bench-validate bench-features clean

setup:            ## install Debian packages, the venv and the Kafka jars
	@scripts/bootstrap.sh

up: setup         ## start the local stack (idempotent)
	@$(VENV)/mlp up

down:             ## stop what `up` started
	@$(VENV)/mlp down

status:
	@$(VENV)/mlp status

demo: up          ## set up, start the stack, run the whole chain, print URLs, login and a prediction
	@$(VENV)/mlp demo --events $(EVENTS)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/hadolint --failure-threshold warning --ignore DL3008 --ignore DL3013 --ignore DL3064 docker/*.Dockerfile
	$(VENV)/mlp schemas check   # every .avsc against its predecessors, BACKWARD, on a scratch registry
	git ls-files -z | xargs -0 $(VENV)/detect-secrets-hook --baseline .secrets.baseline   # no secret is committed

test: k8s-prebuild setup lint  ## all test layers (the tests start and stop the services they need)
	$(VENV)/pytest -q --durations=25

# The Kubernetes control plane's build (about 12 min cold on 2 cores, then cached in the dist dir) starts in
# the background, niced, before setup: it overlaps setup, lint and the suite, and the k8s tests (run last)
# wait for it. The build script holds a lock, so nothing builds it twice.
k8s-prebuild:
	@mkdir -p $${MLP_DIST_DIR:-.mlp/dist}/go
	@MLP_BUILD_NICE=19 setsid nohup scripts/build-k8s.sh > $${MLP_DIST_DIR:-.mlp/dist}/go/k8s-build.log 2>&1 < /dev/null &
	@echo "k8s control plane: building in the background (log: $${MLP_DIST_DIR:-.mlp/dist}/go/k8s-build.log)"

test-fast: setup  ## unit and DAG tests only (no services)
	$(VENV)/pytest -q tests/unit tests/dags

test-gpu: setup   ## GPU tests (on a CUDA machine)
	$(VENV)/pytest -q -m gpu tests/unit/training

lock:             ## refresh constraints.txt from pyproject.toml
	uv pip compile pyproject.toml --extra train --extra dev --python-version 3.11 -o constraints.txt

bench-train: setup ## GPU training benchmark (needs CUDA): this program vs HF Trainer defaults
	$(VENV)/python bench/train_gpu.py

bench-dags: setup  ## DAG parse time per file vs an empty one-operator DAG; fails over 2 s
	$(VENV)/python bench/dag_parse.py

bench-ingest: setup ## exactly-once ingest vs a plain raw consumer, 1M and 10M events (about 15 min)
	$(VENV)/python bench/ingest.py

bench-feast-online: setup ## Feast online lookup (1 entity x the service) vs a raw Redis HMGET, in-process
	$(VENV)/python bench/feast_online.py

bench-feast-offline: setup ## Feast's file, DuckDB and Spark offline stores on one training set vs a DuckDB ASOF join
	$(VENV)/python bench/feast_offline.py

bench-serving: setup ## model server vs mlflow models serve on the same model, concurrency 1 and 8
	$(VENV)/python bench/serving.py

bench-validate: setup ## GX validation of 1M rows vs the same checks in pyarrow.compute
	$(VENV)/python bench/validate.py

bench-features: setup ## Spark feature job on local[2] vs the same SQL in DuckDB, 10M events
	$(VENV)/python bench/features.py

clean: down
	rm -rf .mlp
