#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module for a bounded time each
# (FUZZTIME, default 10s). New crashers are written to the package's
# testdata/fuzz directory by `go test`, where they become regression tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
FUZZTIME=${FUZZTIME:-10s}
failed=0
count=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		count=$((count + 1))
		echo "fuzz: $pkg $target ($FUZZTIME)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
			cat /tmp/fuzz.$$.log
			failed=$((failed + 1))
		fi
	done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz: $count targets, $failed failed"
[ "$failed" -eq 0 ]
