# MLflow tracking server with the PostgreSQL driver and S3 support, pinned like the rest of the project.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1
COPY constraints.txt /tmp/constraints.txt
RUN grep -E "^(mlflow|mlflow-skinny|mlflow-tracing|psycopg2-binary|boto3)==" /tmp/constraints.txt > /tmp/req.txt \
    && pip install --no-cache-dir -r /tmp/req.txt
RUN useradd --create-home --uid 10001 mlflow
USER 10001
EXPOSE 5000
ENTRYPOINT ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
