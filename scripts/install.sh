#!/usr/bin/env bash
# Builds the extension and installs it into the system PostgreSQL 15, with the frozen install
# scripts of released versions (sql/workflow--<version>.sql), so that a database can be
# created at an older version and upgraded with ALTER EXTENSION workflow UPDATE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PG_CONFIG=/usr/bin/pg_config
cargo pgrx install --pg-config "$PG_CONFIG" "$@"
extension_dir="$("$PG_CONFIG" --sharedir)/extension"
for released in sql/workflow--[0-9]*.[0-9]*.[0-9]*.sql; do
  case "$released" in *--*--*) continue ;; esac  # upgrade scripts: cargo pgrx copied them
  install -m 644 "$released" "$extension_dir/"
done
