# Airflow 3 image with mlplatform installed (DAGs, plugins, library), for docker/compose.yaml and k8s.
#   docker build -f docker/airflow.Dockerfile -t mlplatform-airflow:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root pyproject.toml constraints.txt README.md /opt/mlplatform/
COPY --chown=airflow:root include/ /opt/mlplatform/include/
COPY --chown=airflow:root training/ /opt/mlplatform/training/
RUN pip install --no-cache-dir -c /opt/mlplatform/constraints.txt -e "/opt/mlplatform[train]"

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root spark_jobs/ /opt/mlplatform/spark_jobs/
COPY --chown=airflow:root feature_repo/ /opt/mlplatform/feature_repo/
COPY --chown=airflow:root airflow_settings.yaml /opt/mlplatform/
