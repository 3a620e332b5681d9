#!/bin/bash
# Instructions per call of interleaved-bench cases, counted by valgrind's callgrind:
# each case runs once with 100 000 and once with 200 000 calls; the difference, divided by
# 100 000, cancels start-up and warm-up. Deterministic, unaffected by load on the machine.
#
#   scripts/instructions-per-call.sh target/release/deps/interleaved-<hash> "tower Timeout" ...
#
# Needs valgrind. The first line is always the "bare no-op" baseline.
set -euo pipefail
bin=$1
shift
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 1 "$2" "$1" 2>&1 >/dev/null |
        grep -o "Collected : [0-9]*" | grep -o "[0-9]*"
}
base=0
for case in "bare no-op" "$@"; do
    per=$((($(count "$case" 200000) - $(count "$case" 100000)) / 100000))
    [ "$case" = "bare no-op" ] && base=$per
    echo "$case: $per instructions/call (+$((per - base)))"
done
