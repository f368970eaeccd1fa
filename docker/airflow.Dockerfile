# Airflow 3 image with mlplatform installed (DAGs, plugins, library), for docker/compose.yaml and k8s.
#   docker build -f docker/airflow.Dockerfile -t mlplatform-airflow:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER 50000

COPY --chown=50000:0 pyproject.toml constraints.txt README.md /opt/mlplatform/
COPY --chown=50000:0 include/ /opt/mlplatform/include/
COPY --chown=50000:0 training/ /opt/mlplatform/training/
RUN pip install --no-cache-dir -c /opt/mlplatform/constraints.txt -e "/opt/mlplatform[train]"

COPY --chown=50000:0 dags/ /opt/airflow/dags/
COPY --chown=50000:0 plugins/ /opt/airflow/plugins/
COPY --chown=50000:0 config/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
COPY --chown=50000:0 spark_jobs/ /opt/mlplatform/spark_jobs/
COPY --chown=50000:0 feature_repo/ /opt/mlplatform/feature_repo/
COPY --chown=50000:0 docker/k8s/ /opt/mlplatform/docker/k8s/
COPY --chown=50000:0 airflow_settings.yaml /opt/mlplatform/
