#!/bin/sh
# install.sh — build autobot from this source tree and install it.
#
# Usage: scripts/install.sh [--prefix DIR] [--no-deps] [--profile NAME]
#        (or PREFIX=DIR scripts/install.sh)
#
# Builds one fully static release binary — with the musl target when it and musl-gcc
# are installed, otherwise a glibc static-pie (`-C target-feature=+crt-static` on
# x86_64-unknown-linux-gnu) — and installs, under PREFIX (default ~/.local):
#   bin/autobot, share/man/man1/autobot*.1, and completions for bash
#   (share/bash-completion/completions/autobot), zsh (share/zsh/site-functions/_autobot)
#   and fish (share/fish/vendor_completions.d/autobot.fish).
# It then checks what the README's demo needs besides autobot — git (the slave clones
# with it), cc and make (the hello sample builds with them) — and installs the missing
# ones with apt-get or dnf when run as root, or names the packages (--no-deps: skip).
# Safe to run twice: it rebuilds only what changed and replaces files atomically.
# --profile NAME builds with another Cargo profile than `release` (scripts/test.sh
# uses `static-check`: the same static binary, unoptimised, built in less time).
set -eu

prefix=${PREFIX:-"$HOME/.local"}
deps=yes
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
              prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --no-deps) deps=no; shift ;;
    --profile) [ $# -ge 2 ] || { echo "install.sh: --profile needs a Cargo profile's name" >&2; exit 2; }
               profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac

here=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cargo >/dev/null 2>&1; then
  echo "install.sh: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi

cd "$here"
# The C parts built into the binary (SQLite, zstd, jemalloc) need a C compiler
# and make.
for tool in cc make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install.sh: building needs $tool (Debian/Ubuntu: apt-get install gcc make; Fedora: dnf install gcc make)" >&2
    exit 1
  fi
done
tdir=${CARGO_TARGET_DIR:-"$here/target"}
case "$tdir" in /*) ;; *) tdir="$here/$tdir" ;; esac
host=$(rustc -vV | sed -n 's/^host: //p')
if command -v rustup >/dev/null 2>&1 \
   && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
   && command -v musl-gcc >/dev/null 2>&1; then
  target=x86_64-unknown-linux-musl
  echo "install.sh: building a static binary (target $target)"
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --profile "$profile" --locked --target "$target"
else
  # --target keeps the flag away from build scripts and proc macros, which must
  # stay dynamic to be loaded by the compiler.
  target=$host
  echo "install.sh: building a static binary (target $target, +crt-static)"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile "$profile" --locked --target "$target"
fi
# Cargo's directory of a profile: `debug` for dev, else the profile's name.
case "$profile" in
  dev) built="$tdir/$target/debug/autobot" ;;
  *) built="$tdir/$target/$profile/autobot" ;;
esac

# Replace $2 with $1's content atomically.
put() {
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.new.$$"
  mv -f "$2.new.$$" "$2"
}
put "$built" "$prefix/bin/autobot"
chmod 755 "$prefix/bin/autobot"
bin="$prefix/bin/autobot"
echo "install.sh: installed $bin ($("$bin" --version))"
case "$(file -b "$bin" 2>/dev/null || true)" in
  *dynamically*) echo "install.sh: warning: $bin is dynamically linked" >&2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" completions bash >"$tmp/autobot.bash"
"$bin" completions zsh >"$tmp/_autobot"
"$bin" completions fish >"$tmp/autobot.fish"
put "$tmp/autobot.bash" "$prefix/share/bash-completion/completions/autobot"
put "$tmp/_autobot" "$prefix/share/zsh/site-functions/_autobot"
put "$tmp/autobot.fish" "$prefix/share/fish/vendor_completions.d/autobot.fish"
mkdir -p "$tmp/man"
"$bin" manpages "$tmp/man" >/dev/null
for page in "$tmp"/man/*.1; do
  put "$page" "$prefix/share/man/man1/$(basename "$page")"
done
echo "install.sh: installed completions (bash, zsh, fish) and man pages under $prefix/share"

# ---------------------------------------------------------------- the demo's needs
# "COMMAND DEBIAN-PACKAGE FEDORA-PACKAGE": the slave runs git to clone; the hello
# sample is built with cc and make.
if [ "$deps" = yes ]; then
  missing_deb= missing_rpm= missing_cmd=
  for need in "git git git" "cc gcc gcc" "make make make"; do
    set -- $need
    if ! command -v "$1" >/dev/null 2>&1; then
      missing_cmd="$missing_cmd $1" missing_deb="$missing_deb $2" missing_rpm="$missing_rpm $3"
    fi
  done
  if [ -z "$missing_cmd" ]; then
    echo "install.sh: the demo's prerequisites are present (git, cc, make)"
  elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: installing the demo's prerequisites:$missing_deb"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_deb
  elif [ "$(id -u)" -eq 0 ] && command -v dnf >/dev/null 2>&1; then
    echo "install.sh: installing the demo's prerequisites:$missing_rpm"
    # shellcheck disable=SC2086
    dnf install -y -q $missing_rpm
  else
    echo "install.sh: the demo (autobot create DIR -f hello) also needs:$missing_cmd" >&2
    echo "install.sh:   Debian/Ubuntu: sudo apt-get install$missing_deb" >&2
    echo "install.sh:   Fedora:        sudo dnf install$missing_rpm" >&2
  fi
fi

case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "install.sh: add $prefix/bin to your PATH, e.g.  export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
