#!/bin/sh
# The test suite of hello, run by `make check`. It prints automake-style
# PASS:/FAIL: lines and a summary, and exits non-zero when a test fails.
hello=${1:-./hello}
pass=0
fail=0
check() {
  name=$1; expected=$2; shift 2
  actual=$("$@" 2>&1)
  if [ "$actual" = "$expected" ]; then
    echo "PASS: $name"; pass=$((pass + 1))
  else
    echo "FAIL: $name (expected '$expected', got '$actual')"; fail=$((fail + 1))
  fi
}
check greeting "Hello, world!" "$hello"
check custom-greeting "Bonjour" "$hello" -g Bonjour
check long-option "Hi there" "$hello" --greeting="Hi there"
check version "hello (autobot sample) 1.0" "$hello" --version
total=$((pass + fail))
echo "============================================================================"
echo "Testsuite summary for hello 1.0"
echo "============================================================================"
echo "# TOTAL: $total"
echo "# PASS:  $pass"
echo "# SKIP:  0"
echo "# XFAIL: 0"
echo "# FAIL:  $fail"
echo "# XPASS: 0"
echo "# ERROR: 0"
[ "$fail" -eq 0 ]
