#!/bin/sh
# Run by the postgres image when its data directory is empty (deploy/compose.yaml): the
# casemgr database, its owner and the service's role (deploy/postgres/roles.sql). The
# passwords come from the compose secrets and reach psql through its environment, not its
# command line.
set -eu
export CASEMGR_OWNER_PASSWORD CASEMGR_APP_PASSWORD
CASEMGR_OWNER_PASSWORD="$(cat /run/secrets/casemgr-owner-password)"
CASEMGR_APP_PASSWORD="$(cat /run/secrets/casemgr-app-password)"
psql -X --username "$POSTGRES_USER" --dbname postgres \
    -v owner=casemgr_owner -v app=casemgr_app -v database=casemgr \
    -c '\getenv owner_password CASEMGR_OWNER_PASSWORD' \
    -c '\getenv app_password CASEMGR_APP_PASSWORD' \
    -f /casemgr/roles.sql
