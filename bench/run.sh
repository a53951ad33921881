#!/usr/bin/env bash
# The benchmarks: builds the extension and the runner in release mode, then runs B1–B13
# (B5c beside B5), B15 and B16 on a throwaway cluster and rewrites BENCHMARKS.md. `--quick` runs
# smaller sizes; `--only B3,B6` runs a subset and leaves BENCHMARKS.md alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh >/dev/null
cargo build -q --release -p workflow-bench -p workflow-console
exec target/release/workflow-bench "$@"
