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
		ok=0
		for try in 1 2; do
			if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/fuzz.$$.log 2>&1; then
				ok=1
				break
			fi
			# Go's fuzzing engine reports "context deadline exceeded" when
			# a worker is still inside one input as -fuzztime ends on a
			# loaded machine; without a failing input written it found
			# nothing, so that target runs once more.
			if [ "$try" = 1 ] && grep -q 'context deadline exceeded' /tmp/fuzz.$$.log &&
				! grep -q 'Failing input written to' /tmp/fuzz.$$.log; then
				echo "fuzz: $target: the engine's deadline, no failing input; once more"
				continue
			fi
			break
		done
		if [ "$ok" = 0 ]; then
			cat /tmp/fuzz.$$.log
			failed=$((failed + 1))
		fi
	done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz: $count targets, $failed failed"
[ "$failed" -eq 0 ]
