#!/usr/bin/env bash
# Build the kernels, run the whole benchmark suite once, regenerate docs/performance.md.
#
#   bash benchmarks/run.sh [RUN.json] [extra pytest args...]
#
# RUN.json defaults to benchmarks/results/run-<UTC time>.json (git-ignored). Set
# POSWISE_DATA to the data home holding cat/ and mnist/ (real data for the cat epoch
# benchmarks and the time-to-target runs). The suite takes ~7 min on 2 cores; the machine
# should be otherwise idle: the share of CPU used by other processes is recorded for every
# benchmark and flagged in the report. The report uses the minimum over rounds of the
# per-epoch time (robust to interference on a shared machine); POSWISE_REPORT_STAT=median
# selects the median.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/run-$(date -u +%Y%m%dT%H%M%SZ).json}
shift || true
mkdir -p "$(dirname "$out")"
python3 setup.py build_ext --inplace -q
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
busy() { awk 'NR == 1 { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }
if [ -r /proc/stat ]; then
    read -r b0 t0 < <(busy); sleep 3; read -r b1 t1 < <(busy)
    pct=$(( 100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
    if [ "$pct" -gt 10 ]; then
        echo "warning: the machine is ${pct}% busy; other jobs will distort the timings" >&2
    fi
fi
python -m pytest benchmarks/ -p no:cacheprovider --benchmark-json="$out" "$@"
python scripts/bench_report.py "$out" --stat "${POSWISE_REPORT_STAT:-min}" -o docs/performance.md
echo "wrote $out and docs/performance.md"
