#!/usr/bin/env bash
# The whole test suite: lint, in-transaction tests (#[pg_test]), then out-of-process tests
# against real clusters with the extension installed. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features workflow/pg_test -- -D warnings

echo "== in-transaction tests (#[pg_test]) and unit tests"
# initdb refuses root, so the test cluster runs as postgres in a directory it owns.
pgtest_root="${TMPDIR:-/tmp}/workflow-pgtest"
install -d -o postgres -g postgres "$pgtest_root"
cargo pgrx test pg15 --runas postgres --pgdata "$pgtest_root/data"

echo "== out-of-process tests (real clusters, real connections)"
bash scripts/install.sh
cargo test -p workflow-tests -- --test-threads=4
