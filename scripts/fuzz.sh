#!/usr/bin/env bash
# Fuzzes the hand-fed parsers (config YAML, metadata readers, .npy maps) for a bounded
# time with the proptest targets of tests/fuzz.rs: many more random cases than CI's
# default, stopped after SECONDS (default 600). A failure prints the minimal failing
# input; add it to tests/bad_inputs/ or as a case in tests/fuzz.rs, then fix.
#
#   scripts/fuzz.sh [SECONDS] [CASES]
set -u
SECONDS_LIMIT=${1:-600}
CASES=${2:-1000000}
cargo build --release --tests --quiet || exit 1
PROPTEST_CASES=$CASES timeout --signal=INT "$SECONDS_LIMIT" cargo test --release --test fuzz -- --nocapture
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 130 ]; then
    echo "fuzz: stopped after ${SECONDS_LIMIT}s with no failure"
    exit 0
fi
exit $rc
