#!/bin/sh
# Patroni's bootstrap.post_bootstrap: run once, on the node that initialised the
# cluster, with a superuser connection string as $1. Makes the collectors' role and
# database (the password: make-certs' secrets/postgres/password, as in compose.yaml's
# single PostgreSQL); the collectors create their tables themselves.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -v password="$(cat /run/secrets/enoc/password)" <<'SQL'
CREATE ROLE enoc LOGIN PASSWORD :'password';
CREATE DATABASE enoc OWNER enoc;
SQL
