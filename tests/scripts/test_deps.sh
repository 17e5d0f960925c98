#!/usr/bin/env bash
# scripts/deps.sh against a package manager whose lock another process
# holds: stub apt-get and dpkg-query on PATH (nothing is installed). It
# must wait, saying what for, and install once the lock is free; or give
# up after PREPACK_APT_LOCK_TIMEOUT with a message naming the holder.
# Usage: test_deps.sh SOURCE_DIR
set -u
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

mkdir "$tmp/bin"
cat > "$tmp/bin/dpkg-query" <<'STUB'
#!/bin/sh
exit 1
STUB
# apt-get: "locked" while $tmp/locked-N counts down, then succeeds and
# logs its arguments.
cat > "$tmp/bin/apt-get" <<STUB
#!/bin/sh
n=\$(cat "$tmp/locked" 2>/dev/null || echo 0)
if [ "\$n" -gt 0 ]; then
    echo \$((n - 1)) > "$tmp/locked"
    echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)" >&2
    exit 100
fi
echo "\$*" >> "$tmp/apt.log"
STUB
cat > "$tmp/bin/id" <<'STUB'
#!/bin/sh
echo 0
STUB
chmod +x "$tmp/bin/"*

run() { # run TIMEOUT: deps.sh with the stubs; stderr in $tmp/err
    PATH="$tmp/bin:$PATH" PREPACK_APT_LOCK_TIMEOUT=$1 PREPACK_APT_LOCK_POLL=0 \
        bash "$src/scripts/deps.sh" build 2>"$tmp/err"
}

# locked for three tries, then free: waits, says so, installs
echo 3 > "$tmp/locked"
run 60 && ok || bad "deps.sh failed while waiting for the lock: $(cat "$tmp/err")"
grep -q "waiting for the package manager's lock (held by process 4242 (unattended-upgr)" "$tmp/err" &&
    ok || bad "no message saying what it waits for: $(cat "$tmp/err")"
grep -q "install .*libzstd-dev" "$tmp/apt.log" && ok || bad "nothing installed after the wait"
grep -q "DPkg::Lock::Timeout=" "$tmp/apt.log" && ok || bad "apt-get not asked to wait for the lock"

# locked for good: gives up after the timeout, naming the holder
echo 1000000 > "$tmp/locked"
rm -f "$tmp/apt.log"
run 0 && bad "deps.sh succeeded without the lock" || ok
grep -q "gave up after 0 s waiting for the package manager's lock (held by process 4242" "$tmp/err" &&
    ok || bad "no give-up message: $(cat "$tmp/err")"
[ ! -f "$tmp/apt.log" ] && ok || bad "installed without the lock"

# any other apt failure is passed through at once
cat > "$tmp/bin/apt-get" <<'STUB'
#!/bin/sh
echo "E: Unable to locate package libnothing" >&2
exit 100
STUB
SECONDS=0
run 60 && bad "deps.sh succeeded on an apt error" || ok
grep -q "Unable to locate package" "$tmp/err" && ok || bad "apt's error not shown"
[ "$SECONDS" -lt 10 ] && ok || bad "waited on an error that is not a lock"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
