-- One PostgreSQL for the Airflow metadata DB, the MLflow backend store, the Feast SQL registry and the
-- schema registry's storage.
CREATE DATABASE mlflow;
CREATE DATABASE feast;
CREATE DATABASE registry;
