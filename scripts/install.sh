#!/bin/sh
# install.sh — build autobot from this source tree and install the binary.
#
# Usage: scripts/install.sh [--prefix DIR]      (or PREFIX=DIR scripts/install.sh)
#
# Builds the release binary with cargo — fully static (x86_64-unknown-linux-musl)
# when that target and musl-gcc are installed, otherwise a normal glibc build — and
# copies it to $PREFIX/bin/autobot (default PREFIX: ~/.local). Safe to run twice: it
# rebuilds only what changed and replaces the installed binary atomically.
set -eu

prefix=${PREFIX:-"$HOME/.local"}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v cargo >/dev/null 2>&1; then
  echo "install.sh: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi

target=
if command -v rustup >/dev/null 2>&1 \
   && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
   && command -v musl-gcc >/dev/null 2>&1; then
  target=x86_64-unknown-linux-musl
fi

cd "$here"
tdir=${CARGO_TARGET_DIR:-"$here/target"}
case "$tdir" in /*) ;; *) tdir="$here/$tdir" ;; esac
if [ -n "$target" ]; then
  echo "install.sh: building a static binary (target $target)"
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target"
  built="$tdir/$target/release/autobot"
else
  echo "install.sh: building (static needs: rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools)"
  cargo build --release --locked
  built="$tdir/release/autobot"
fi

mkdir -p "$prefix/bin"
cp "$built" "$prefix/bin/.autobot.new.$$"
mv -f "$prefix/bin/.autobot.new.$$" "$prefix/bin/autobot"
echo "install.sh: installed $prefix/bin/autobot ($("$prefix/bin/autobot" --version))"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "install.sh: add $prefix/bin to your PATH, e.g.  export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
