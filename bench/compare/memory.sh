#!/usr/bin/env bash
# autobot's memory in one command: builds autobot (cargo build --release --locked) and
# runs memory.py against it alone — the idle master's and slave's RSS (with RssAnon,
# RssFile and threads), and whether both come back within 10 % of idle after a
# 200-build burst and after a 100 MB log. Exits 1 when a check fails.
#
# Usage: bench/compare/memory.sh [memory.py options]   (e.g. --builds 20 --log-bytes
#        10000000 --settle 3 for a quick check)
# Environment: COMPARE_WORK (default TARGET/compare/memory, wiped first), TARGET =
# cargo's target dir. The output is kept in TARGET/compare/memory-last-run.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "bench/compare: needs $tool on PATH" >&2; exit 2; }
done

echo "# building autobot (cargo build --release --locked)" >&2
cargo build --release --locked --quiet
TARGET="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET/release/autobot"
WORK="${COMPARE_WORK:-$TARGET/compare/memory}"
mkdir -p "$(dirname "$WORK")"

cleanup() {
  # after a crash: stop only what this run started (its pid files under $WORK)
  local pf pid
  for pf in "$WORK"/autobot/*/autobot.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$WORK/"; then
      kill "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

python3 -u "$HERE/memory.py" --autobot "$BIN" --work "$WORK" "$@" |
  tee "$TARGET/compare/memory-last-run.txt"
exit "${PIPESTATUS[0]}"
