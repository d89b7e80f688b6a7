-- casemgr's database and its two roles (docs/deployment.md, "Database roles").
--
--   owner  owns the schema: `casemgr init` (migrations) and `casemgr restore` connect as it.
--   app    the service's role: reads and writes rows, owns nothing, so it cannot drop the
--          append-only triggers that guard the audit trail (SECURITY.md).
--
-- Run once as a superuser, with psql variables:
--   psql -v owner=casemgr_owner -v owner_password=... -v app=casemgr_app \
--        -v app_password=... -v database=casemgr -f roles.sql
-- (deploy/postgres/initdb/10-casemgr.sh does this when the compose database starts empty).
\set ON_ERROR_STOP on

CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"app" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"database" OWNER :"owner";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"app";

\connect :"database"
-- Tables, sequences and functions the owner creates (every migration) are usable by the
-- service's role at once; nothing else is.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO :"app";
