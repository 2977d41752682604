#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, one after another:
#   scripts/fuzz.sh [TARGET...]      (through `./task fuzz`)
# FUZZ_SECONDS per target (default 60); FUZZ_SANITIZER (default `none`: the parsers are safe Rust,
# so panics, overflows and hangs are what there is to find, and an uninstrumented build is twice
# as fast; `address` for ASan). Installs cargo-fuzz into .tools/bin and a nightly toolchain when
# missing. New corpus entries go to fuzz/target/corpus/<target> (the checked-in seeds in
# fuzz/corpus/<target> are only read). Exits non-zero when a target crashed, naming the input.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into .tools (a few minutes)" >&2
  cargo install cargo-fuzz --locked --quiet --root .tools
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
fuzz() { cargo +nightly fuzz "$@"; }
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(fuzz list); fi
echo "fuzz: building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
fuzz build -s "$sanitizer"
mkdir -p fuzz/target/logs
failed=()
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  log=fuzz/target/logs/$t.log
  mkdir -p "$work" "fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds}s (log: $log)" >&2
  if fuzz run -s "$sanitizer" "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" \
      | sed "s/^/fuzz: $t: /" >&2 || true
  else
    failed+=("$t")
    tail -n 40 "$log" >&2
    echo "fuzz: $t FAILED; crashing input(s):" >&2
    grep -Eo '(Test unit written to|artifact_prefix=[^;]*; Test unit written to) [^ ]+' "$log" >&2 || true
    ls -t "fuzz/artifacts/$t" 2>/dev/null | head -n 3 | sed "s|^|  fuzz/artifacts/$t/|" >&2 || true
    echo "  reproduce: cargo +nightly fuzz run -s $sanitizer $t fuzz/artifacts/$t/<file>" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
