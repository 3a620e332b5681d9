#!/usr/bin/env bash
# Runs every fuzz target (or those named after SECONDS) in turn for SECONDS each (default 300), one job each, seeded from
# fuzz/seeds/<target> and keeping what it finds in fuzz/corpus/<target> (git-ignored).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets a stable toolchain
# take the nightly-only flags it passes. Each target's libFuzzer log ends up in
# fuzz/logs/<target>.log; its last "Done N runs in S second(s)" line is the figure to report.
# FUZZ_TARGET_DIR=/some/dir builds there instead of fuzz/target.
set -euo pipefail
seconds="${1:-300}"
cd "$(dirname "$0")"
shift || true
targets=(retry_after grpc_pushback grpc_timeout request_timeout_ms policy_toml policy_json gateway_config path_normalise)
if [ "$#" -gt 0 ]; then targets=("$@"); fi
mkdir -p logs
for t in "${targets[@]}"; do
  dict=()
  case "$t" in
    policy_*) dict=(-dict=dicts/policy.dict) ;;
    gateway_config) dict=(-dict=dicts/gateway.dict) ;;
  esac
  mkdir -p "corpus/$t"
  echo "== $t ($seconds s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run ${FUZZ_TARGET_DIR:+--target-dir "$FUZZ_TARGET_DIR"} "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" "${dict[@]}" >"logs/$t.log" 2>&1 || { tail -40 "logs/$t.log"; exit 1; }
  grep -E "^Done [0-9]+ runs" "logs/$t.log" || tail -3 "logs/$t.log"
done
