#!/usr/bin/env bash
# The long forms of the fuzz and overload tests (tests/fuzz): schemathesis with FUZZ_MAX_EXAMPLES examples per
# operation and phase (and at least FUZZ_MIN_REQUESTS requests), the hypothesis property tests with 3,000
# examples each, the hand-made corpus, the overload run at OVERLOAD_FACTOR times the sustainable rate for
# OVERLOAD_SECONDS, and the server CPU time per answered and per refused request (100 answers and 500
# refusals per second of OVERLOAD_SECONDS). Figures go to $FUZZ_REPORT_DIR (default runs/fuzz/) as JSON, with
# pytest's log.
#
#   scripts/fuzz_long.sh                                   # about 15 minutes on 2 cores
#   FUZZ_MAX_EXAMPLES=300 OVERLOAD_SECONDS=10 scripts/fuzz_long.sh -k schemathesis
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_PROFILE="${FUZZ_PROFILE:-long}"
export FUZZ_MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
export FUZZ_MIN_REQUESTS="${FUZZ_MIN_REQUESTS:-1000}"
export OVERLOAD_SECONDS="${OVERLOAD_SECONDS:-30}"
export OVERLOAD_FACTOR="${OVERLOAD_FACTOR:-4}"
export FUZZ_REPORT_DIR="${FUZZ_REPORT_DIR:-runs/fuzz}"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p "$FUZZ_REPORT_DIR"
log="$FUZZ_REPORT_DIR/pytest.log"
status=0
"$PYTHON" -m pytest tests/fuzz -p no:cacheprovider -s -q -rxXf "$@" >"$log" 2>&1 || status=$?
grep -E '^(schemathesis|overload|shedding): |passed|failed|XPASS|FAILED' "$log" || true
echo "pytest log: $log; figures: $FUZZ_REPORT_DIR/*.json"
exit "$status"
