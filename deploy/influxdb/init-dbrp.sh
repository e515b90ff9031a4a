#!/bin/sh
# Run once by the influxdb:2 image after its first-start setup (docker-entrypoint-initdb.d):
# map the InfluxQL database "<bucket>" / retention policy "autogen" to the collectors'
# bucket, so that Grafana's InfluxQL dashboards (dashboards/) read what the collectors
# write through the v2 API. The image runs this with the admin token configured.
set -eu
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --default
