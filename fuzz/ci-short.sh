#!/usr/bin/env bash
# Short fuzzing run for CI (libFuzzer through cargo-fuzz), runnable from the repo root:
#
#   fuzz/ci-short.sh [SECONDS]        # default 30 s per target (or $FUZZ_SECONDS)
#   FUZZ_TARGETS="rule_eval" fuzz/ci-short.sh 120
#
# Installs cargo-fuzz if missing, seeds the corpora from the repository, builds
# every target once (release, debug assertions and overflow checks, AddressSanitizer),
# replays the saved crash inputs in fuzz/regressions/<target>/, then fuzzes each target
# for SECONDS. Exits non-zero if any target crashes, times out or runs out of memory;
# the failing input is in fuzz/artifacts/<target>/.
#
# The machine has only a stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the
# nightly-only flags cargo-fuzz passes (-Zsanitizer, -Cpasses=sancov-module, ...).
set -euo pipefail

secs="${1:-${FUZZ_SECONDS:-30}}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
read -r -a targets <<<"${FUZZ_TARGETS:-scan_parser config_parser rule_eval}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

echo "== seeding corpora"
fuzz/seed.sh

echo "== building fuzz targets"
cargo fuzz build

dict_for() {
  case "$1" in
    scan_parser) echo fuzz/dict/json.dict ;;
    config_parser) echo fuzz/dict/config.dict ;;
    rule_eval) echo fuzz/dict/rhai.dict ;;
  esac
}

failed=()
for t in "${targets[@]}"; do
  # Saved crash inputs: each is run once and must not crash any more.
  mapfile -t saved < <(find "fuzz/regressions/$t" -type f ! -name '*.md' ! -name '.gitkeep' 2>/dev/null | sort)
  if [ "${#saved[@]}" -gt 0 ]; then
    echo "== $t: replaying ${#saved[@]} saved regression input(s)"
    if ! cargo fuzz run "$t" "${saved[@]}" -- -timeout=20 -rss_limit_mb=2048; then
      failed+=("$t (regression input)")
    fi
  fi

  echo "== $t: fuzzing for ${secs} s"
  log="fuzz/artifacts/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  set +e
  cargo fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
    -dict="$(dict_for "$t")" -print_final_stats=1 2>&1 | tee "$log" |
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|thread .* panicked|SUMMARY|Test unit written)'
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "!! $t failed; last lines of $log:"
    tail -n 40 "$log"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing FAILED: ${failed[*]}"
  echo "(new crashing inputs are in fuzz/artifacts/<target>/, saved ones in fuzz/regressions/<target>/)"
  exit 1
fi
echo "fuzzing passed: ${targets[*]}, ${secs} s each"
