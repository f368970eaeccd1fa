-- One PostgreSQL for the Airflow metadata DB, the MLflow backend store and the Feast SQL registry.
CREATE DATABASE mlflow;
CREATE DATABASE feast;
