-- Runs once, when the PostgreSQL volume is empty: one database per component, so each can be
-- backed up, restored or moved on its own. The `fraud` database (promotion log, alerts, API
-- keys, prediction log) is created by POSTGRES_DB.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
