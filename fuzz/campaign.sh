#!/usr/bin/env bash
# A fuzzing campaign of one target: fuzz/campaign.sh <target> <seconds> [smoke]
#
# Campaign: libFuzzer's fork mode with one worker (a finding is saved to fuzz/artifacts/<target>/
# and the run goes on), niced, over a working corpus seeded from the committed one
# (fuzz/corpus-new/<target>, not committed); writes build/reliability/fuzz-<target>.json.
# Smoke: one plain libFuzzer process over a copy of the committed corpus; stops and fails at the
# first finding.
set -uo pipefail
cd "$(dirname "$0")/.."
t=$1
secs=$2
smoke=${3:-}
root=$(pwd)
mkdir -p build/fuzz build/reliability "fuzz/artifacts/$t"
log="$root/build/fuzz/$t.log"
if [ -n "$smoke" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
else
    work="$root/fuzz/corpus-new/$t"
    mkdir -p "$work"
fi
cp -n "fuzz/corpus/$t"/* "$work"/ 2>/dev/null || true
seeds=$(find "$work" -type f | wc -l)
before=$(find "fuzz/artifacts/$t" -type f | wc -l)
start=$(date +%s)
common=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0
        -print_final_stats=1 -artifact_prefix="$root/fuzz/artifacts/$t/")
if [ -n "$smoke" ]; then
    (cd fuzz && cargo +nightly fuzz run "$t" "$work" -- "${common[@]}") >"$log" 2>&1
    rc=$?
else
    (cd fuzz && nice -n 19 cargo +nightly fuzz run "$t" "$work" -- "${common[@]}" \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1) >"$log" 2>&1
    rc=$?
fi
end=$(date +%s)
after=$(find "fuzz/artifacts/$t" -type f | wc -l)
findings=$((after - before))
# The last status line: "#<execs> ... cov: <edges> ft: <features> corp: <units>/<bytes> ...";
# fork mode prints "#<execs>: cov: ..." the same way.
last=$(grep -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" | tail -n1)
execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n1)
[ -n "$execs" ] || execs=$(printf '%s' "$last" | sed -nE 's/^#([0-9]+).*/\1/p')
cov=$(printf '%s' "$last" | sed -nE 's/.*cov: ([0-9]+).*/\1/p')
ft=$(printf '%s' "$last" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
corp=$(printf '%s' "$last" | sed -nE 's/.*corp: ([0-9]+).*/\1/p')
units=$(find "$work" -type f | wc -l)
kind=campaign
[ -n "$smoke" ] && kind=smoke
[ -n "$smoke" ] || cat > "build/reliability/fuzz-$t.json" <<JSON
{
  "tool": "cargo-fuzz (libFuzzer)",
  "target": "$t",
  "kind": "$kind",
  "started_utc": "$(date -u -d "@$start" +%Y-%m-%dT%H:%M:%SZ)",
  "seconds": $((end - start)),
  "max_total_time": $secs,
  "timeout_per_input_s": 10,
  "execs": ${execs:-0},
  "execs_per_sec": $(( ${execs:-0} / ( (end - start) > 0 ? (end - start) : 1 ) )),
  "seed_units": $seeds,
  "corpus_units": $units,
  "libfuzzer_corpus_units": ${corp:-0},
  "coverage_edges": ${cov:-0},
  "features": ${ft:-0},
  "findings": $findings,
  "exit_code": $rc,
  "log": "build/fuzz/$t.log"
}
JSON
echo "fuzz $t ($kind): ${execs:-0} execs in $((end - start)) s, cov ${cov:-?}, ft ${ft:-?}, corpus $units, findings $findings, rc $rc"
[ "$rc" -eq 0 ] && [ "$findings" -eq 0 ]
