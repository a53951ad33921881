#!/usr/bin/env bash
# Builds the extension and installs it into the system PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo pgrx install --pg-config /usr/bin/pg_config "$@"
