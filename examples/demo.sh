#!/usr/bin/env bash
# The README's demo: start a small workload, checkpoint it, restore it, and
# show that it continued where it left off.
set -euo pipefail
BIN=$(realpath "${1:-target/debug/crabmigrate}")
DIR=$(mktemp -d /tmp/crabmigrate-demo.XXXXXX)
WORKLOAD=""
RESTORED=""

cleanup() {
    [[ -n $WORKLOAD ]] && kill -9 "$WORKLOAD" 2>/dev/null || true
    [[ -n $RESTORED ]] && kill -9 "$RESTORED" 2>/dev/null || true
    rm -rf -- "$DIR"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
counter() { cat "$DIR/counter"; }

step "what this host can do"
"$BIN" check | sed -n '/^Verdict/,$p'

step "start a workload: a shell loop counting 5 times a second into $DIR/counter"
# setsid: the workload leads its own session, as CRIU needs for a tree it
# restores on its own.
setsid sh -c 'i=0; while :; do i=$((i+1)); echo "$i" > "$1/counter"; sleep 0.2; done' \
    demo "$DIR" </dev/null >/dev/null 2>&1 &
WORKLOAD=$!
sleep 1
echo "process $WORKLOAD is counting: $(counter)"

step "checkpoint it (the process stops and its state goes to $DIR/images)"
# bash reports the job CRIU kills as "Killed"; hush that, not our errors.
exec 3>&2 2>/dev/null
"$BIN" checkpoint --pid "$WORKLOAD" --images-dir "$DIR/images" 2>&3
wait "$WORKLOAD" || true   # reap it, so its pid is free again
exec 2>&3 3>&-
before=$(counter)
sleep 1
echo "one second later the counter still says $(counter): nothing is running"
ls "$DIR/images" | head -5 | sed 's/^/  /'
echo "  ... $(ls "$DIR/images" | wc -l) files, $(du -sh "$DIR/images" | cut -f1)"

step "restore it"
"$BIN" restore --images-dir "$DIR/images" --detach --pid-file "$DIR/pid"
RESTORED=$(cat "$DIR/pid")
WORKLOAD=""
sleep 1
after=$(counter)
echo "process $RESTORED counted on from $before to $after"
if (( after > before )) && [[ $RESTORED == "$(cat "$DIR/pid")" ]]; then
    echo "the workload continued where it left off"
else
    echo "demo failed: the counter did not move on after the restore" >&2
    exit 1
fi
