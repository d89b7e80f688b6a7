#!/bin/sh
# Create the secrets deploy/compose.yaml reads (deploy/secrets/, never committed): random
# database passwords, the matching pgpass files and the metrics token. Run it once from
# deploy/; it never overwrites a secret that exists.
set -eu
umask 077
mkdir -p secrets keys key-backups backups
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
create() { [ -e "secrets/$1" ] || { random > "secrets/$1"; echo "created secrets/$1"; }; }
create postgres-password
create casemgr-owner-password
create casemgr-app-password
create metrics-token
[ -e secrets/pgpass-owner ] || \
    echo "postgres:5432:casemgr:casemgr_owner:$(cat secrets/casemgr-owner-password)" > secrets/pgpass-owner
[ -e secrets/pgpass-app ] || \
    echo "postgres:5432:casemgr:casemgr_app:$(cat secrets/casemgr-app-password)" > secrets/pgpass-app
# Compose mounts these files as they are on the host: each must belong to the one user
# that reads it (casemgr: uid 10001; the postgres image's postgres user: uid 999).
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 secrets/pgpass-owner secrets/pgpass-app secrets/metrics-token
    chown 999:999 secrets/postgres-password secrets/casemgr-owner-password \
        secrets/casemgr-app-password
    chown -R 10001:10001 keys key-backups backups
else
    echo "not root: chown the files as deploy/make-secrets.sh says before starting" >&2
fi
chmod 700 keys key-backups backups
chmod 600 secrets/*
