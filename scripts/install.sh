#!/usr/bin/env bash
# Builds the extension and installs it into PostgreSQL 15: the library, its control file and
# SQL scripts, and the frozen install scripts of released versions (sql/workflow--<v>.sql),
# so that a database can be created at an older version and upgraded with
# ALTER EXTENSION workflow UPDATE.
#
#   bash scripts/install.sh [--debug]      (PG_CONFIG=... to pick another pg_config)
#
# A release build unless --debug. Each file is written beside its destination and renamed
# over it, so a running server keeps the library it loaded (overwriting it in place would
# crash the backends using it) and loads the new one when it restarts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
build=()
for arg in "$@"; do
  case "$arg" in
    --debug) build+=(--debug) ;;
    --release) ;;  # the default
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
  esac
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$stage" "${build[@]}"

lib_dir=$("$PG_CONFIG" --pkglibdir)
extension_dir="$("$PG_CONFIG" --sharedir)/extension"
sudo=()
[ -w "$lib_dir" ] && [ -w "$extension_dir" ] || sudo=(sudo)
place() { # mode source destination
  "${sudo[@]}" install -m "$1" "$2" "$3.new.$$"
  "${sudo[@]}" mv -f "$3.new.$$" "$3"
}
place 755 "$stage$lib_dir/workflow.so" "$lib_dir/workflow.so"
for file in "$stage$extension_dir"/*; do
  place 644 "$file" "$extension_dir/${file##*/}"
done
for released in sql/workflow--[0-9]*.[0-9]*.[0-9]*.sql; do
  case "$released" in *--*--*) continue ;; esac  # upgrade scripts came with the package
  place 644 "$released" "$extension_dir/${released##*/}"
done
echo "installed workflow into $lib_dir and $extension_dir"
