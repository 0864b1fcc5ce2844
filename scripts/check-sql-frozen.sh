#!/usr/bin/env bash
# A released version's install script never changes: sql/opsmeter--<version>.sql is the frozen
# copy, and the script `cargo pgrx install` generated for that version must match it (pgrx's
# `-- file:line` comments aside). A change to the SQL surface needs a new version and an
# upgrade script sql/opsmeter--<old>--<new>.sql.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
generated="$("$PG_CONFIG" --sharedir)/extension/opsmeter--${version}.sql"
frozen="sql/opsmeter--${version}.sql"
[ -f "$generated" ] || die "no installed $generated: run cargo pgrx install first"
strip() { grep -v -E '^--' "$1" | sed -e 's/[[:space:]]*$//' | cat -s; }
if [ "${1:-}" = "--update" ]; then
    strip "$generated" >"$frozen"
    echo "wrote $frozen"
    exit 0
fi
[ -f "$frozen" ] || die "$frozen is missing: run scripts/check-sql-frozen.sh --update once for a new version"
if ! diff -u "$frozen" <(strip "$generated") >/tmp/opsmeter-sql.diff; then
    head -40 /tmp/opsmeter-sql.diff
    die "the generated install script for ${version} differs from $frozen (see above): bump the version and add an upgrade script, or, for an unreleased version, run scripts/check-sql-frozen.sh --update"
fi
echo "install script for ${version} matches $frozen"
