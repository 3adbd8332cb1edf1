#!/bin/sh
# Run once by the postgres image, on the first start of an empty data volume: the role the
# services log in as, and its database. The role owns its database and is nothing more: no
# superuser, no CREATEDB, no CREATEROLE (README, "Security and limits"). The superuser stays
# with POSTGRES_PASSWORD, for backups and for you.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=password="$GENSTREAM_DB_PASSWORD" <<'SQL'
CREATE ROLE genstream LOGIN PASSWORD :'password';
CREATE DATABASE genstream OWNER genstream;
REVOKE ALL ON DATABASE genstream FROM PUBLIC;
SQL
