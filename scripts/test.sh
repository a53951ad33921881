#!/usr/bin/env bash
# The whole test suite: lint, in-transaction tests (#[pg_test]), then out-of-process tests
# against real clusters with the extension installed. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tests.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features workflow/pg_test -- -D warnings

echo "== in-transaction tests (#[pg_test]) and unit tests"
# initdb refuses root, so the test cluster runs as postgres in a directory it owns.
pgtest_root="${TMPDIR:-/tmp}/workflow-pgtest"
install -d -o postgres -g postgres "$pgtest_root"
cargo pgrx test pg15 --runas postgres --pgdata "$pgtest_root/data" 2>&1 | tee -a "$log"

echo "== the console's unit tests"
cargo test -p workflow-console 2>&1 | tee -a "$log"

echo "== out-of-process tests (real clusters, real connections)"
bash scripts/install.sh --debug
# The console's end-to-end test starts the binary.
cargo build -p workflow-console
cargo test -p workflow-tests --tests --no-fail-fast -- --test-threads=4 2>&1 | tee -a "$log"

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "workflow: %d passed, %d failed\n", p, f }' "$log"
