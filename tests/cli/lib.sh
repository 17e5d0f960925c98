# Shared by the command-line test scripts: sourced with PREPACK and
# FIXTURES as $1 and $2. Sets $prepack, $fixtures, a scratch $tmp removed on
# exit, and the counters and checks below.
set -u
prepack=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
fixtures=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# expect_exit CODE CMD...: runs CMD, stdout/stderr to $tmp/out, $tmp/err
expect_exit() {
    local want=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else
        bad "exit $got, want $want: $*"; sed 's/^/    /' "$tmp/err" >&2; fi
}

expect_in() { # expect_in FILE TEXT
    if grep -qF -- "$2" "$1"; then ok; else
        bad "'$2' not in $1:"; sed 's/^/    /' "$1" >&2; fi
}

