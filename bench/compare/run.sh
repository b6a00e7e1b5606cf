#!/usr/bin/env bash
# The peer benchmark in one command: Buildbot 4.3 and autobot, the same scenarios, one
# run, this machine. Builds autobot (cargo build --release --locked), makes a venv
# with Buildbot 4.3.0 + buildbot-worker 4.3.0 from pip-freeze.txt's pinned versions
# when it is missing, then runs bench.py, which drives both systems (Buildbot first in
# each scenario) and prints `SYSTEM FIGURE VALUE UNIT` lines and, at the end, the table
# `figure | buildbot | autobot | ratio` with the date, the machine and its load.
#
# Usage: bench/compare/run.sh [bench.py options]   (bench.py --help lists them; e.g.
#        --builds 20 --log-bytes 10000000 --fleet 5 --quiet-wait 0 for a quick check)
# Environment: COMPARE_VENV (default TARGET/compare/venv), COMPARE_WORK (default
# TARGET/compare/run, wiped at the start of every run), TARGET = cargo's target dir.
# The full output is kept in TARGET/compare/last-run.txt, the table in
# TARGET/compare/table.md. Only 127.0.0.1 is used; a quiet run takes 5–10 minutes.
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
VENV="${COMPARE_VENV:-$TARGET/compare/venv}"
WORK="${COMPARE_WORK:-$TARGET/compare/run}"
mkdir -p "$(dirname "$WORK")"

want="$(grep -E '^buildbot(-worker|-www)?==' "$HERE/pip-freeze.txt" | sort | tr '\n' ' ')"
have=""
if [ -x "$VENV/bin/pip" ]; then
  have="$("$VENV/bin/pip" freeze 2>/dev/null | grep -E '^buildbot(-worker|-www)?==' | sort | tr '\n' ' ' || true)"
fi
if [ "$have" != "$want" ]; then
  echo "# making the venv $VENV: $want(pinned by $HERE/pip-freeze.txt)" >&2
  python3 -m venv "$VENV" || {
    echo "bench/compare: python3 -m venv failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 2
  }
  # every package, the transitive ones too, at the version RESULTS were measured with
  "$VENV/bin/pip" install -q -r "$HERE/pip-freeze.txt"
fi

cleanup() {
  # after a crash: stop only what this run started (pid files under $WORK whose
  # process still runs in, or names, a directory under $WORK; a recycled pid is left alone)
  local pf pid
  for pf in "$WORK"/*/fleet*/*/fleet.pid "$WORK"/buildbot/*/twistd.pid "$WORK"/autobot/*/autobot.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    if [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$WORK"/* ]] ||
       { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$WORK/"; then
      kill "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

"$VENV/bin/python" -u "$HERE/bench.py" --venv "$VENV" --autobot "$BIN" --work "$WORK" \
  --table "$TARGET/compare/table.md" "$@" | tee "$TARGET/compare/last-run.txt"
