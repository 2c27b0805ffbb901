#!/usr/bin/env bash
# `make bench`: every performance figure of the project in one unattended run, written into
# docs/benchmarks.md (the section between the `make bench` markers) and
# docs/latency-vs-rate.svg.
#
#   make bench                  # 1,000,000 people (≈ 1.35 M certificates)
#   SIZE=10000000 make bench    # nationwide scale (takes a while)
#
# Steps: generate the data, a plain csv pass (the loader's ceiling), `pmh-load full`, the
# csv pass again (the ceiling is the mean of the two) and a `pmh-load diff` of about
# 100,000 rows, the
# engine benchmark (lookup vs raw get_pinned), the criterion suites, then pmh-server on
# the loaded store with pmh-bench http: closed loop (ceiling + lookups) and open loop at
# 10/25/50/75 % of the measured lookup peak. Only 127.0.0.1 is ever targeted.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${SIZE:-1000000}
work=${BENCH_DIR:-var/bench}
port=${BENCH_PORT:-18180}
duration=${BENCH_DURATION:-15s}
rounds=${BENCH_ROUNDS:-5}
round_duration=${BENCH_ROUND_DURATION:-3s}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pmh/target}
# The programs as deployed: the `dist` profile (whole-program optimisation, see Cargo.toml).
bin=$CARGO_TARGET_DIR/dist
results=$work/results

scripts/cargo.sh build --locked --profile dist -p pmh-server -p pmh-loader -p pmh-bench --bins
rm -rf "$work"
mkdir -p "$results"

{
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr)"
  echo "Toolchain: $(rustc --version)"
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Data: $size synthetic people (pmh-bench gen, seed 1)"
} >"$results/machine.txt"
echo "SIZE=$size make bench" >"$results/command.txt"

umask 077
"$bin/pmh-server" --print-demo-config --db "$work/store" | sed "s/^listen = .*/listen = \"127.0.0.1:$port\"/" >"$work/pmh.toml"
sed -n 's/^token = "\(.*\)"$/\1/p' "$work/pmh.toml" | head -1 >"$work/gw.token"

# The diff file: about 100,000 rows (the issue's target size), whatever the size.
diff_share=$(awk -v n="$size" 'BEGIN { s = 100000 * 100 / (n * 1.02); if (s > 100) s = 100; printf "%.3f", s }')
echo "bench: generating $size people (diff: $diff_share % of them)" >&2
"$bin/pmh-bench" gen --persons "$size" --diff-share "$diff_share" --out "$work/input" | tee "$results/gen.txt" >&2
echo "bench: csv pass (the loader's ceiling)" >&2
"$bin/pmh-bench" csv-pass "$work/input/full.csv" | tee "$results/csvpass.txt" >&2
echo "bench: pmh-load full" >&2
"$bin/pmh-load" full --quiet --config "$work/pmh.toml" "$work/input/full.csv" | tee "$results/load.txt" >&2
echo "bench: csv pass again (the ceiling is the mean of the two)" >&2
# The load dropped its input from the page cache (docs/operations.md); the ceiling is
# measured on a cached file, as before the load, so that it is never lowered by the disk.
cat "$work/input/full.csv" > /dev/null
"$bin/pmh-bench" csv-pass "$work/input/full.csv" | tee "$results/csvpass-after.txt" >&2
echo "bench: pmh-load diff" >&2
"$bin/pmh-load" diff --quiet --config "$work/pmh.toml" "$work/input/diff.csv" | tee "$results/diff.txt" >&2

# The engine benchmark builds its own store from records held in memory: 2 M people is
# its ceiling on 24 GiB (10 M was killed by the OOM killer at 24 GB RSS). Larger sizes
# are measured through HTTP against the store pmh-load built above.
engine_persons=$(( size < 2000000 ? size : 2000000 ))
echo "Engine benchmark: $engine_persons people (its builder holds everything in memory)" >>"$results/machine.txt"
echo "bench: engine lookup vs raw get_pinned ($engine_persons people)" >&2
"$bin/pmh-bench" engine --persons "$engine_persons" --ops 1000000 --rounds 4 --dir "$work/engine" | tee "$results/engine.txt" >&2
rm -rf "$work/engine"

echo "bench: criterion suites" >&2
for suite in components loader; do
  scripts/cargo.sh bench --locked -p pmh-bench --bench "$suite" -- --output-format bencher 2>/dev/null \
    | grep '^test ' | tee "$results/criterion-$suite.txt" >&2
done
scripts/cargo.sh bench --locked -p pmh-server --bench render -- --output-format bencher 2>/dev/null \
  | grep '^test ' | tee "$results/criterion-render.txt" >&2

echo "bench: pmh-server on the loaded store" >&2
RUST_LOG=warn "$bin/pmh-server" --config "$work/pmh.toml" 2>"$work/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.1
done
# Options common to every run; each run adds its own --duration and --warmup (pmh-bench
# refuses an option given twice).
http=("$bin/pmh-bench" http --url "http://127.0.0.1:$port" --token-file "$work/gw.token" --persons "$size"
  --connections 16 --json)
# The closed loop alternates ceiling and lookups (ABBA) so that the machine's drift falls
# on both sides; the same time per side as one phase of $duration.
"${http[@]}" --rounds "$rounds" --duration "$round_duration" --warmup 1s >"$results/http-closed.json"
peak=$("$bin/pmh-bench" report --results "$results" --lookup-rps-of "$results/http-closed.json")
echo "bench: closed-loop lookup peak $peak req/s" >&2
for pct in 10 25 50 75; do
  rate=$(awk -v p="$peak" -v q="$pct" 'BEGIN { printf "%d", p * q / 100 }')
  [ "$rate" -gt 0 ] || continue
  "${http[@]}" --duration "$duration" --warmup 2s --rate "$rate" --no-ceiling >"$results/http-open-$rate.json"
done
kill -TERM $server
wait $server || true
trap - EXIT

"$bin/pmh-bench" report --results "$results" --doc docs/benchmarks.md --plot docs/latency-vs-rate.svg
echo "bench: docs/benchmarks.md and docs/latency-vs-rate.svg written (results in $results)" >&2
