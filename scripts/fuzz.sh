#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (not part of CI).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain the
# sanitizer flags need RUSTC_BOOTSTRAP=1, set here. A crash leaves its input
# in fuzz/artifacts/<target>/: add it as a regression test, then fix.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
status=0
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    echo "== $target: ${secs}s"
    if ! cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096 2>"/tmp/fuzz-$target.log"; then
        echo "!! $target found a crash: see fuzz/artifacts/$target/ and /tmp/fuzz-$target.log"
        status=1
    fi
    grep -E "^(#[0-9]+.*DONE|Done [0-9]+ runs)" "/tmp/fuzz-$target.log" | tail -1 || true
done
exit $status
