#!/usr/bin/env bash
# Builds every fuzz target of fuzz/ (the validators of berth-shared, docs/security.md
# "Fuzzing") with libFuzzer's instrumentation and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # SECONDS per target, 20 by default; all targets
#
# It builds on the stable toolchain of rust-toolchain.toml with the flags `cargo fuzz` passes
# (sancov instrumentation, `--cfg fuzzing`), without a sanitizer: the code under test forbids
# `unsafe`, and AddressSanitizer would need nightly's `-Zsanitizer` (FUZZ_SANITIZER=address
# turns it on through RUSTC_BOOTSTRAP=1). Targets run two at a time (one per core), each
# from its seed corpus fuzz/corpus/<target> plus what earlier runs found
# (fuzz/target/corpus/<target>, not in git). A failure prints the panic and leaves the input in
# fuzz/artifacts/<target>/ (not in git): `fuzz/target/<triple>/release/<target> <file>` replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECS=${1:-20}
shift || true
case "$SECS" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for f in fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi
JOBS=${FUZZ_JOBS:-$(nproc)}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

FLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# Each sanitizer builds into its own folder, so switching does not rebuild the other.
DIR=target
case "${FUZZ_SANITIZER:-none}" in
  none) ;;
  address) FLAGS+=" -Zsanitizer=address"; export RUSTC_BOOTSTRAP=1; DIR=target/asan ;;
  *) echo "FUZZ_SANITIZER is none or address" >&2; exit 2 ;;
esac

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null; then
  echo "==> installing g++ (libFuzzer is C++)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; } \
    || { echo "error: could not install g++" >&2; exit 1; }
fi

echo "==> cargo fmt --check (fuzz/)"
cargo fmt -- --check
echo "==> building the fuzz targets (release, libFuzzer instrumentation, sanitizer ${FUZZ_SANITIZER:-none})"
start=$(date +%s)
# --target keeps the flags off build scripts and proc macros, as cargo fuzz does.
RUSTFLAGS="$FLAGS" CARGO_INCREMENTAL=0 cargo build --quiet --release --locked \
  --target "$TRIPLE" --target-dir "$DIR" --bins
echo "    built in $(($(date +%s) - start)) s"

BIN=$DIR/$TRIPLE/release
mkdir -p target/fuzz-logs
run() {
  local t=$1 dict=()
  mkdir -p "target/corpus/$t" "artifacts/$t" "corpus/$t"
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  "$BIN/$t" "target/corpus/$t" "corpus/$t" "${dict[@]}" -max_total_time="$SECS" -timeout=10 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"target/fuzz-logs/$t.log" 2>&1
}

echo "==> running each target for $SECS s, $JOBS at a time"
start=$(date +%s)
failed=()
pids=()
names=()
wait_one() {
  local i=$1
  if ! wait "${pids[$i]}"; then failed+=("${names[$i]}"); fi
}
for t in "${TARGETS[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "no fuzz target $t" >&2; exit 2; }
  run "$t" &
  pids+=($!)
  names+=("$t")
  if [ "${#pids[@]}" -ge "$JOBS" ]; then
    wait_one 0
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do wait_one "$i"; done

for t in "${TARGETS[@]}"; do
  log=target/fuzz-logs/$t.log
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "target/corpus/$t" "corpus/$t" -type f | wc -l)
  printf '    %-10s %10s runs  %8s exec/s  %5s corpus files\n' "$t" "${runs:-?}" "${rate:-?}" "$corpus"
done
echo "    ran in $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "==> fuzz target $t FAILED (input in fuzz/artifacts/$t/):" >&2
    grep -v '^ *[0-9]*: \|^ *at ' "target/fuzz-logs/$t.log" | tail -25 >&2
  done
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
