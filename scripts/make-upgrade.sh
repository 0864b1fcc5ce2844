#!/usr/bin/env bash
# Drafts sql/opsmeter--OLD--NEW.sql from the frozen install scripts when NEW only adds to OLD:
# every block of lines NEW adds, in order, after a header. Fails when NEW changes or removes a
# line of OLD (such an upgrade must be written by hand). Review the draft, then add the header
# comment that says what the release adds.
#   scripts/make-upgrade.sh OLD NEW "one-line summary"
source "$(dirname "$0")/common.sh"
cd "$ROOT"
old="${1:?old version}"; new="${2:?new version}"; summary="${3:?summary}"
a="sql/opsmeter--${old}.sql"; b="sql/opsmeter--${new}.sql"; out="sql/opsmeter--${old}--${new}.sql"
[ -f "$a" ] && [ -f "$b" ] || die "need $a and $b"
if { diff "$a" "$b" || true; } | grep -E '^[0-9]+(,[0-9]+)?[cd]' >/dev/null; then
    die "$b changes or removes lines of $a: write $out by hand"
fi
{
    echo "-- opsmeter ${old} -> ${new}: ${summary}"
    echo "\\echo Use \"ALTER EXTENSION opsmeter UPDATE TO '${new}'\" to load this file. \\quit"
    echo
    { diff "$a" "$b" || true; } | sed -n 's/^[0-9]*a\([0-9]*\)\(,\([0-9]*\)\)\{0,1\}$/\1 \3/p' | while read -r from to; do
        sed -n "${from},${to:-$from}p" "$b"
    done
} >"$out"
echo "wrote $out"
