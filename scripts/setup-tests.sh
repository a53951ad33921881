#!/usr/bin/env bash
# Installs what only the tests need, and nothing twice: the exporter the monitoring test
# scrapes, promtool for the alert rules (in .tools/, taken out of Debian's package),
# chromium and playwright-core for the console's browser test, Node.js and Python's venv, and the examples' packages from PyPI and npm at the
# versions their lock files pin. Safe to run on every invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

log() { printf '[setup] %s\n' "$*"; }

packages=(prometheus-postgres-exporter chromium)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
# shellcheck source=scripts/apt.sh
source scripts/apt.sh
apt_install "${packages[@]}"
apt_extract_tool prometheus promtool .tools

# A stamp beside the installed packages says which lock file they came from.
python_env=examples/python/.venv
if ! cmp -s examples/python/requirements.txt "$python_env/installed-from.txt"; then
  log "installing the Python example's packages"
  rm -rf "$python_env"
  python3 -m venv "$python_env"
  "$python_env/bin/pip" install --quiet --require-hashes -r examples/python/requirements.txt
  cp examples/python/requirements.txt "$python_env/installed-from.txt"
fi
if ! cmp -s examples/node/package-lock.json examples/node/node_modules/installed-from.json; then
  log "installing the Node.js example's packages"
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
  cp examples/node/package-lock.json examples/node/node_modules/installed-from.json
fi

if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/installed-from.json; then
  log "installing playwright-core for the browser test"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/browser/package-lock.json tests/browser/node_modules/installed-from.json
fi

log "ready for the tests"
