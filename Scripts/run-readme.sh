#!/usr/bin/env bash
# Runs a README literally: its ```sh blocks, in order, in one bash session (so `cd`, variables, helper functions
# and background processes carry from block to block), from the repository's root. Exits 0 only if every command
# succeeds. Loopback only; every process the README started in the background is stopped on exit, and the whole
# run is bounded by WALKTHROUGH_TIMEOUT seconds (default 900, which covers a `swift build` with little to compile).
#
#   Scripts/run-readme.sh Examples/README.md             # as a user would, including its `swift build`
#   Scripts/run-readme.sh Examples/README.md --print     # print the script it would run, and exit
#   WALKTHROUGH_KEEP=1 Scripts/run-readme.sh README      # keep the logs and files ($DEMO) after success
#
# A README that sets DEMO to a directory gets it removed after success, and its *.log files shown on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 README.md [--print]" >&2; exit 2; }
readme=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
[ -f "$readme" ] || { echo "run-readme: no such file: $readme" >&2; exit 2; }
timeout_seconds=${WALKTHROUGH_TIMEOUT:-900}

# The fenced ```sh blocks, unindented, in order. Each block is followed by a marker that reports progress.
extract() {
  awk '
    /^```sh[[:space:]]*$/ { inside = 1; block++; print "__walkthrough_block " block; next }
    /^```/ && inside     { inside = 0; print ""; next }
    inside               { print }
  ' "$readme"
}

script=$(mktemp "${TMPDIR:-/tmp}/walkthrough.XXXXXX")
extract > "$script"
blocks=$(grep -c '^__walkthrough_block ' "$script" || true)
if [ "$blocks" -eq 0 ]; then
  echo "run-readme: no \`\`\`sh blocks in $readme" >&2
  exit 1
fi
if [ "${1:-}" = "--print" ]; then
  sed 's/^__walkthrough_block \(.*\)$/# --- block \1/' "$script"
  rm -f "$script"
  exit 0
fi

__walkthrough_block() {
  echo "=== run-readme: block $1 of $blocks" >&2
}

# Stops what the walkthrough started (its background jobs: this shell's children), politely first.
stop_children() {
  local pids
  pids=$(jobs -p || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 1 50); do
    local alive=0
    for pid in $pids; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" -eq 0 ] && return 0
    sleep 0.2
  done
  echo "run-readme: still running after 10 s, killing: $pids" >&2
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "${watchdog:-}" ]; then kill "$watchdog" 2>/dev/null; fi
  stop_children
  rm -f "$script"
  if [ "$status" -ne 0 ]; then
    echo "run-readme: FAILED (exit $status)" >&2
    if [ -n "${DEMO:-}" ] && [ -d "$DEMO" ]; then
      for log in "$DEMO"/*.log; do
        [ -s "$log" ] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
      done
      echo "run-readme: files kept in $DEMO" >&2
    fi
  else
    echo "run-readme: OK" >&2
    if [ -n "${DEMO:-}" ] && [ -d "$DEMO" ]; then
      if [ -n "${WALKTHROUGH_KEEP:-}" ]; then echo "run-readme: files kept in $DEMO" >&2; else rm -rf "$DEMO"; fi
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The watchdog: past the deadline it stops this shell's other children (a hung foreground command too), then
# this shell, whose EXIT trap cleans up.
main_pid=$$
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$timeout_seconds" &
  sleeper=$!
  wait "$sleeper"
  echo "run-readme: timed out after $timeout_seconds s" >&2
  for pid in $(pgrep -P "$main_pid"); do
    if [ "$pid" != "$BASHPID" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  kill -TERM "$main_pid" 2>/dev/null || true
) &
watchdog=$!

cd "$root"
# shellcheck disable=SC1090
source "$script"
