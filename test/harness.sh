# harness.sh: what the shell test scripts share, sourced by each: a temporary directory $tmp removed at
# exit, pass/fail counters, and finish NAME, which prints "NAME: P passed, F failed" and gives the
# script's exit status.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "  ok   $1"; }
fail() { failed=$((failed + 1)); echo "  FAIL $1"; }
finish() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
