#!/usr/bin/env bash
# Installs what building and testing opsmeter needs, skipping whatever is already there:
# Debian packages (PostgreSQL 15 server and headers, clang for bindgen, pg_cron, tdigest,
# python3 for the billing fetcher and its stub exporter),
# cargo-pgrx at the pinned version, and `cargo pgrx init` against Debian's pg_config.
# Idempotent; well under a second when everything is present.
source "$(dirname "$0")/common.sh"

PACKAGES=(
    "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" "postgresql-${PG_MAJOR}-cron"
    "postgresql-${PG_MAJOR}-tdigest" libclang-dev clang pkg-config sudo make gcc python3
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"

if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
    say "installing cargo-pgrx ${PGRX_VERSION} (a few minutes, once)"
    cargo install cargo-pgrx --version "=${PGRX_VERSION}" --locked
fi

PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "^pg${PG_MAJOR} = \"${PG_CONFIG}\"" "$PGRX_CONFIG"; then
    say "cargo pgrx init --pg${PG_MAJOR} ${PG_CONFIG}"
    cargo pgrx init "--pg${PG_MAJOR}" "$PG_CONFIG" >/dev/null
fi
