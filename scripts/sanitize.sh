#!/usr/bin/env bash
# Build poswise's kernels with AddressSanitizer + UndefinedBehaviorSanitizer
# (POSWISE_SANITIZE=1 in setup.py) in a temporary copy of the package, and run the kernel,
# trainer and thread tests on it. The in-place build of the worktree is not touched.
#
#   bash scripts/sanitize.sh [pytest args...]    (default: the three test files, -q)
#
# Python itself is not built with ASan: the ASan runtime is preloaded (it must come first),
# and leak detection is off because the interpreter keeps its allocations at exit. Any
# ASan or UBSan report aborts the run with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r src/poswise "$tmp/"
find "$tmp/poswise" \( -name '*.so' -o -name '*.c' -o -name __pycache__ \) -prune -exec rm -rf {} +
POSWISE_SANITIZE=1 python setup.py build_ext -b "$tmp" -t "$tmp/build" >"$tmp/build.log" 2>&1 \
    || { cat "$tmp/build.log" >&2; exit 1; }
cc="${CC:-gcc}"
asan="$("$cc" -print-file-name=libasan.so)"
ubsan="$("$cc" -print-file-name=libubsan.so)"
if [ "$#" -eq 0 ]; then
    set -- -q tests/test_kernels.py tests/test_trainers.py tests/test_threads.py
fi
export LD_PRELOAD="$asan:$ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$tmp"
# the tests must import the sanitized copy
python -c "import poswise._kernels._core as c; assert c.__file__.startswith('$tmp'), c.__file__"
python -m pytest -p no:cacheprovider "$@"
