"""The central collector: MQTT ingest, InfluxDB metrics, incidents, HTTP API and console."""
