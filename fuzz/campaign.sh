#!/usr/bin/env bash
# Fuzzing runs of one target.
#
#   fuzz/campaign.sh <target> <seconds>          a campaign: libFuzzer's fork mode with one
#       worker at a time (a finding is saved to fuzz/artifacts/<target>/ and the run goes on),
#       niced, over a working corpus seeded from the committed one (fuzz/corpus-new/<target>,
#       not committed); writes build/reliability/fuzz-<target>.json
#   fuzz/campaign.sh <target> <seconds> smoke    one plain libFuzzer process over a copy of the
#       committed corpus; stops and fails at the first finding; writes no summary
#   fuzz/campaign.sh --summary <target> <seconds> <start epoch> <end epoch> <exit code>
#       (re)writes the summary of a campaign from its log
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# summary <target> <max seconds> <start> <end> <exit code> <seed units> <findings before>
summary() {
    local t=$1 secs=$2 start=$3 end=$4 rc=$5 seeds=$6 before=$7
    local log="build/fuzz/$t.log" work="fuzz/corpus-new/$t"
    local after findings last execs cov ft corp units
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    findings=$((after - before))
    # status lines: "#<execs>  NEW cov: <edges> ft: <features> corp: <units>/<bytes> ...", in
    # fork mode "#<execs>: cov: <edges> ft: <features> corp: <units> ..."
    # (the one with the most executions: the newest, whatever else wrote to the log)
    last=$(grep -a -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" |
        awk '{ n = $1; gsub(/[#:]/, "", n); if (n + 0 >= m) { m = n + 0; l = $0 } } END { print l }')
    execs=$(printf '%s' "$last" | sed -nE 's/^#([0-9]+).*/\1/p')
    cov=$(printf '%s' "$last" | sed -nE 's/.*cov: ([0-9]+).*/\1/p')
    ft=$(printf '%s' "$last" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
    corp=$(printf '%s' "$last" | sed -nE 's/.*corp: ([0-9]+).*/\1/p')
    units=$(find "$work" -type f | wc -l)
    local dur=$((end - start))
    mkdir -p build/reliability
    cat > "build/reliability/fuzz-$t.json" <<JSON
{
  "tool": "cargo-fuzz (libFuzzer, ASan, fork mode, 1 worker, nice 19)",
  "target": "$t",
  "started_utc": "$(date -u -d "@$start" +%Y-%m-%dT%H:%M:%SZ)",
  "seconds": $dur,
  "max_total_time": $secs,
  "timeout_per_input_s": 10,
  "execs": ${execs:-0},
  "execs_per_sec": $(( ${execs:-0} / (dur > 0 ? dur : 1) )),
  "seed_units": $seeds,
  "corpus_units": $units,
  "libfuzzer_corpus_units": ${corp:-0},
  "coverage_edges": ${cov:-0},
  "features": ${ft:-0},
  "findings": $findings,
  "exit_code": $rc,
  "log": "$log"
}
JSON
    echo "fuzz $t: ${execs:-0} execs in $dur s, cov ${cov:-?}, ft ${ft:-?}, corpus $units, findings $findings, rc $rc"
    [ "$rc" -eq 0 ] && [ "$findings" -eq 0 ]
}

if [ "${1:-}" = "--summary" ]; then
    summary "$2" "$3" "$4" "$5" "$6" "$(find "fuzz/corpus/$2" -type f | wc -l)" 0
    exit
fi

t=$1
secs=$2
smoke=${3:-}
mkdir -p build/fuzz "fuzz/artifacts/$t"
log="$root/build/fuzz/$t.log"
common=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0
        -print_final_stats=1 -artifact_prefix="$root/fuzz/artifacts/$t/")
if [ -n "$smoke" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp "fuzz/corpus/$t"/* "$work"/ 2>/dev/null || true
    log="$root/build/fuzz/smoke-$t.log"
    (cd fuzz && cargo +nightly fuzz run "$t" "$work" -- "${common[@]}") >"$log" 2>&1
    rc=$?
    last=$(grep -a -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" | tail -n1)
    echo "fuzz-smoke $t: ${last:-no status line} (rc $rc, log build/fuzz/smoke-$t.log)"
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|ERROR|Test unit written' "$log" | head -n 5
    fi
    exit "$rc"
fi

work="$root/fuzz/corpus-new/$t"
mkdir -p "$work"
cp -n "fuzz/corpus/$t"/* "$work"/ 2>/dev/null || true
seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
before=$(find "fuzz/artifacts/$t" -type f | wc -l)
start=$(date +%s)
(cd fuzz && nice -n 19 cargo +nightly fuzz run "$t" "$work" -- "${common[@]}" \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1) >"$log" 2>&1
rc=$?
summary "$t" "$secs" "$start" "$(date +%s)" "$rc" "$seeds" "$before"
