#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need, and nothing twice.
# Safe to run on every invocation: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.1
PG_MAJOR=15
APT_PACKAGES=(sudo clang libclang-dev build-essential pkg-config "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
  # The monitoring test scrapes a real exporter; the examples need Python's venv and Node.js.
  prometheus-postgres-exporter)
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
python3 -m venv --help >/dev/null 2>&1 || APT_PACKAGES+=(python3-venv)

log() { printf '[setup] %s\n' "$*"; }

# The toolchain rust-toolchain.toml pins, with the components the lint step uses.
RUST_CHANNEL=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup run "$RUST_CHANNEL" cargo clippy -V >/dev/null 2>&1 ||
   ! rustup run "$RUST_CHANNEL" cargo fmt --version >/dev/null 2>&1; then
  log "installing the Rust toolchain $RUST_CHANNEL"
  rustup toolchain install "$RUST_CHANNEL" --profile minimal --component rustfmt,clippy
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi

PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
[ -x "$PG_CONFIG" ] || PG_CONFIG=/usr/bin/pg_config
if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "pointing cargo-pgrx at the system PostgreSQL $PG_MAJOR"
  cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
fi

# The examples' packages, from PyPI and npm at the versions their lock files pin. A stamp
# beside the installed packages says which lock file they came from.
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

log "ready"
