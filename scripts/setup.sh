#!/usr/bin/env bash
# Installs what the build and the demo need, and nothing twice: the pinned Rust toolchain,
# the apt packages, cargo-pgrx. (What only the tests need is scripts/setup-tests.sh.)
# Safe to run on every invocation: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.1
PG_MAJOR=15
APT_PACKAGES=(sudo clang libclang-dev build-essential pkg-config "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR")

log() { printf '[setup] %s\n' "$*"; }

# The toolchain rust-toolchain.toml pins, with the components the lint step uses.
RUST_CHANNEL=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup run "$RUST_CHANNEL" cargo clippy -V >/dev/null 2>&1 ||
   ! rustup run "$RUST_CHANNEL" cargo fmt --version >/dev/null 2>&1; then
  log "installing the Rust toolchain $RUST_CHANNEL"
  rustup toolchain install "$RUST_CHANNEL" --profile minimal --component rustfmt,clippy
fi

# shellcheck source=scripts/apt.sh
source scripts/apt.sh
apt_install "${APT_PACKAGES[@]}"

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

log "ready"
