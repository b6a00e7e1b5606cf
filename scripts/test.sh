#!/usr/bin/env bash
# test.sh — the README's test command: install what the tests need, then run them.
#
# Usage: scripts/test.sh [CARGO-TEST-ARGS...]   e.g. scripts/test.sh --test web_api
#
# 1. Debian packages (the DEB list below): each one whose check fails is installed
#    with apt-get when run as root; otherwise the script names the exact
#    `apt-get install` line to run, and stops if CI=true.
# 2. Python tools (the PIP list below) go into a venv cached under the cargo target
#    directory (target/test-tools/python), made once and topped up when the list
#    changes. Its bin/ goes first on PATH, so the tests find `trial`, `virtualenv`,
#    `pytest` and a `python3` that imports setuptools. (The buildbot-worker 4.3.0
#    the conformance tests use goes into its own venv under target/tmp, made by
#    the tests on first use.)
# 3. The static binary, built and installed by scripts/install.sh (its quick
#    `static-check` profile: the release's static linking, unoptimised) under the
#    target directory for tests/cli_static.rs (AUTOBOT_STATIC_BIN names it), when
#    the whole suite runs or an argument names cli_static.
# 4. `cargo test --locked --no-fail-fast ARGS...`, so one failing test binary does
#    not hide the others; its output is kept in target/test-tools/last-run.log,
#    every SKIP line (a test that could not run) is listed again at the end, and
#    a last line adds up the passed and failed tests of every test binary.
# 5. When the whole suite runs: a second pass over the test binaries that start
#    masters (the PG_PASS list below) with AUTOBOT_TEST_DB=postgresql, so every
#    test master keeps its history in PostgreSQL (tests/support/testdb.rs: one
#    server per test binary, a database per master) and the two backends cannot
#    drift. Its log is target/test-tools/last-run-postgresql.log; it ends with
#    the same summary lines, marked "postgresql". `scripts/test.sh --pg` runs
#    only this pass; `AUTOBOT_TEST_DB=postgresql scripts/test.sh --test NAME`
#    runs one binary on PostgreSQL.
#
# It prints what it installed. With CI=true (as `.ci/run` runs it) every test that
# cannot find its tool fails instead of printing SKIP. Adding a tool is one line in
# DEB or PIP.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---------------------------------------------------------------- what the tests need
# Debian packages: "PACKAGE CHECK". CHECK is a command that must be on PATH, an
# absolute path (a glob is fine) that must exist, or — when it has a space — a
# shell test that must succeed; e.g. "postgresql /usr/lib/postgresql/*/bin/postgres".
DEB=(
  "git              git"            # every test with a repository
  "mercurial        hg"             # hg poller, hg checkouts, several sources
  "make             make"           # autotools, cpan, make check
  "gcc              cc"             # autotools hello, compile warnings
  "perl             prove"          # cpan factory, prove test counts
  "bsdutils         script"         # create's prompts on a pseudo-terminal
  "python3          python3"        # python factories, the tools venv
  "python3-venv     python3 -c 'import ensurepip, venv'"  # python3 -m venv
  "chromium         chromium"       # web_browser
  "chromium-driver  chromedriver"   # web_browser (WebDriver)
  "fuse3            fusermount3"    # stalls: a slow log disk (FUSE) when not root
  "ngircd           /usr/sbin/ngircd"  # notify_irc: a real IRC server for the bot
  "openssl          openssl"        # notify_irc_tls: the IRC server's certificate
  "python3-aiosmtpd /usr/lib/python3/dist-packages/aiosmtpd"  # notify_mail: a real SMTP server
  "subversion       svnserve"       # vc_svn: svn, svnadmin, svnserve (repositories and a server)
  "subversion-tools /usr/share/subversion/hook-scripts/commit-email.pl"  # svn commit mails
  "brz              brz"            # Bazaar (brz, also `bzr`)
  "darcs            darcs"          # Darcs
  "patch            patch"          # try from svn, bzr and darcs trees: the slave's patch(1)
  "cvs              cvs"            # CVS (a local CVSROOT)
  "tla              tla"            # GNU Arch
  "postgresql       /usr/lib/postgresql/*/bin/initdb"  # pg_*: a real PostgreSQL server per test
)
# Python tools for the tools venv: pip requirements, pinned so every run tests
# against the same tools (a changed pin is installed over the old one).
PIP=(
  "twisted==26.10.0"     # trial: the trial factory, trial test counts
  "virtualenv==21.15.14" # virtualenv: the virtualenv factory
  "pytest==9.2.0"        # python3 -m pytest: pytest test counts
  "setuptools==80.9.0"   # python3 setup.py: the distutils factory
  "aiosmtpd==1.4.6"      # python3 -m aiosmtpd in the venv: notify_mail's SMTP server
)
# Test binaries that start masters, run again on PostgreSQL (step 5). Not here:
# those that start none (config_errors, cli_create, fuzz_config, layers, the
# slave_* tests against their own fake master, poller_*), the pg_* tests (on
# PostgreSQL already), and those about SQLite itself: ops_backup (backup and
# restore of state.sqlite), cli_static (the static binary's own SQLite) and
# stalls (a slow disk under the master directory; it reads state.sqlite).
PG_PASS=(
  artifacts change_attacks change_hooks change_to_build changes_maildir
  checkout_credentials checkout_mirror checkout_sources cli_operator
  cli_unbuilt_factory conformance daemon_verbs engine_hello engine_locks
  engine_recovery engine_steps engine_volume engine_worker factory_steps
  factory_types force_waiting fuzz_intake fuzz_protocol log_counts notify_irc
  notify_irc_tls notify_mail notify_status ops_listen pull_requests retention
  scheduler_git scheduler_hg scheduler_rules scheduler_timed secrets sendchange
  slave_cpdir_parity slave_pb slave_vc statuslog step_semantics try_jobs
  try_vc vc_arch vc_bzr vc_cvs vc_darcs vc_svn web_api web_attacks web_bounds
  web_browser web_pages web_status
)

# ---------------------------------------------------------------- helpers
say() { printf 'test.sh: %s\n' "$*" >&2; }
# Whether this is CI's run (CI=true, any case, as the tests read it).
ci() {
  local v=${CI:-}
  [ "${v,,}" = true ]
}

# Whether CHECK (see DEB) holds.
present() {
  local check=$1
  case "$check" in
    *" "*) (eval "$check") >/dev/null 2>&1 ;;
    /*) compgen -G "$check" >/dev/null ;;
    *) command -v "$check" >/dev/null 2>&1 ;;
  esac
}

# `--pg` alone: only the PostgreSQL pass.
pg_only=false
if [ $# -eq 1 ] && [ "$1" = --pg ]; then
  pg_only=true
  shift
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is not installed; install Rust (https://rustup.rs) and run again"
  exit 1
fi

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
tools="$target_dir/test-tools"
venv="$tools/python"
mkdir -p "$tools"

# ---------------------------------------------------------------- Debian packages
missing=()
for line in "${DEB[@]}"; do
  read -r pkg check <<<"$line"
  present "$check" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "installed: $(dpkg-query -W -f='${Package} ${Version}, ' "${missing[@]}" | sed 's/, $//')"
    still=()
    for line in "${DEB[@]}"; do
      read -r pkg check <<<"$line"
      present "$check" || still+=("$pkg ($check)")
    done
    if [ ${#still[@]} -gt 0 ]; then
      say "installed, but still not found: ${still[*]}"
      exit 1
    fi
  else
    say "missing Debian packages: ${missing[*]}"
    say "install them with:  sudo apt-get install ${missing[*]}"
    if ci; then
      say "CI=true: stopping (every test must run in CI)"
      exit 1
    fi
    say "going on: the tests that need them will print SKIP"
  fi
else
  say "Debian packages: all present (${#DEB[@]} checked)"
fi

# ---------------------------------------------------------------- Python tools venv
# The venv is kept while its python runs; .autobot-requirements lists what is in it.
python_tools() {
  if ! "$venv/bin/python3" -c pass >/dev/null 2>&1; then
    rm -rf "$venv"
    say "making the Python tools venv $venv"
    python3 -m venv "$venv" || return 1
    : >"$venv/.autobot-requirements"
  fi
  local want=() req
  for req in "${PIP[@]}"; do
    grep -qxF -- "$req" "$venv/.autobot-requirements" || want+=("$req")
  done
  if [ ${#want[@]} -eq 0 ]; then
    say "Python tools: all present in $venv"
    return 0
  fi
  say "installing into $venv: ${want[*]}"
  "$venv/bin/python3" -m pip install --disable-pip-version-check --quiet "${want[@]}" || return 1
  printf '%s\n' "${PIP[@]}" >"$venv/.autobot-requirements"
  say "installed: ${want[*]}"
}
# One script at a time sets the venv up (the lock is released with fd 9 below).
exec 9>"$tools/.lock"
flock 9
if python_tools; then
  exec 9>&-
  export PATH="$venv/bin:$PATH"
else
  say "cannot make the Python tools venv $venv (is PyPI reachable? see the pip error above)"
  if ci; then
    exit 1
  fi
  say "going on: the tests that need trial, virtualenv or pytest will print SKIP"
fi

# ---------------------------------------------------------------- the static binary
# tests/cli_static.rs checks the binary scripts/install.sh installs, alone in an empty
# directory. It is built here (the `static-check` profile: linked as a release is,
# unoptimised, so its dependencies build in minutes less than a release's) when the whole suite runs or an argument names cli_static,
# installed under the target directory, and named by AUTOBOT_STATIC_BIN.
if { [ $# -eq 0 ] && ! $pg_only; } || [[ " $* " == *cli_static* ]]; then
  static_prefix="$tools/static"
  say "building the static binary with scripts/install.sh --profile static-check --prefix $static_prefix"
  if scripts/install.sh --profile static-check --prefix "$static_prefix" --no-deps >"$tools/install.log" 2>&1; then
    export AUTOBOT_STATIC_BIN="$static_prefix/bin/autobot"
    say "installed $AUTOBOT_STATIC_BIN"
  else
    tail -n 20 "$tools/install.log" >&2
    say "scripts/install.sh failed (whole log: $tools/install.log); cli_static cannot run"
    if ci; then
      exit 1
    fi
  fi
fi

# ---------------------------------------------------------------- the tests
if [ -t 1 ]; then
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-always}
fi

# One pass: `cargo test --locked --no-fail-fast ARGS...` into LOG, then its
# SKIP lines and its summary lines (LABEL names the pass: "" for the normal
# one). Sets `status` to cargo's exit status.
pass() {
  local log=$1 label=$2
  shift 2
  local start=$SECONDS
  say "running${label:+ ($label)}: cargo test --locked --no-fail-fast $*"
  set +e
  cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e

  local skips
  skips=$(grep -oE 'SKIP .*did not run.*' "$log" | sort -u || true)
  if [ -n "$skips" ]; then
    say "these tests did not run${label:+ ($label)} (install what they name, or run as root):"
    printf '%s\n' "$skips" >&2
  fi
  # cargo's "test result: ok. 12 passed; 0 failed; 1 ignored; ..." lines, added up
  # into one closing line.
  if [ "$status" -ne 0 ]; then
    say "cargo test${label:+ ($label)} failed (exit $status); the failing test binaries are named above"
    # The failures again, last, where a log cut to its end still shows them:
    # each failing test's output without the masters' log lines (at most 40
    # lines a test), and the lines of a test binary that died (abort, signal).
    say "what the failing tests printed${label:+ ($label)} (whole log: $log):"
    failures "$log" 40 2000 >&2
    # Kept for the end of the run, shorter, where the last lines of CI's log show it.
    {
      printf 'test.sh: failing tests%s (whole log: %s):\n' "${label:+ ($label)}" "$log"
      failures "$log" 12 300 | head -n 60
    } >>"$failed"
  fi
  awk -v label="${label:+ ($label)}" -v secs=$((SECONDS - start)) '/^test result: / {
         for (i = 1; i < NF; i++) {
           if ($(i + 1) ~ /^passed;?$/) p += $i
           if ($(i + 1) ~ /^failed;?$/) f += $i
           if ($(i + 1) ~ /^ignored;?$/) g += $i
         }
         n++
       }
       END {
         printf "test.sh%s: %d test binaries reported; %d tests ignored (#[ignore]: run by name); %d s\n", label, n, g, secs > "/dev/stderr"
         printf "total%s: %d passed, %d failed\n", label, p, f
       }' "$log" | tee -a "$totals"
}

# The failing tests of LOG: each one's name and output without the masters' log
# lines and the backtrace (at most LINES lines a test, each cut to WIDTH
# characters; the panic's line names the place), and the
# lines of a test binary that died (abort, signal, hang, a fuzz case).
failures() {
  local log=$1 lines=$2 width=$3
  awk -v lines="$lines" -v width="$width" '
       /^     Running / { bin = $2 }
       /^---- .* stdout ----$/ { show = 1; n = 0; print "[" bin "] " $0; next }
       /^failures:$/ && show { show = 0 }
       /^test result: / { show = 0 }
       /^stack backtrace:$/ && show { show = 0 }
       show && !/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:.]+Z / && n++ < lines { print substr($0, 1, width) }
       !show && /process didn.t exit successfully|HANG on input|FAILED \(seed/ { print "[" bin "] " substr($0, 1, width) }' "$log"
}

overall=0
# What every pass failed and its totals, printed again as the run's last lines.
failed="$tools/last-failures.txt"
totals="$tools/last-totals.txt"
: >"$failed"
: >"$totals"
if ! $pg_only; then
  pass "$tools/last-run.log" "" "$@"
  overall=$status
fi
# Step 5: the binaries that start masters again, each master on PostgreSQL.
if [ $# -eq 0 ]; then
  pg_args=()
  for t in "${PG_PASS[@]}"; do
    pg_args+=(--test "$t")
  done
  AUTOBOT_TEST_DB=postgresql pass "$tools/last-run-postgresql.log" postgresql "${pg_args[@]}"
  if [ "$status" -ne 0 ]; then
    overall=$status
  fi
fi
if [ -s "$failed" ]; then
  say "the run failed; the failures of every pass again:"
  cat "$failed" >&2
  cat "$totals"
fi
exit "$overall"
