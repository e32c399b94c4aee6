#!/bin/sh
# A bounded fuzz run of reimage's parsers (issue 9), outside `cargo test`:
# the property tests in src/proptests.rs (config loader, durations, xCAT
# output, SOAP documents, kept-output bounds) with many more cases than
# `cargo test` gives them, round after round, each round from a fresh
# random seed, until MINUTES (default 3) have passed. Exits non-zero at the
# first failure; proptest prints the minimal failing input.
#
#   tests/fuzz/run.sh            # 3 minutes
#   MINUTES=10 CASES=50000 tests/fuzz/run.sh
set -eu
cd "$(dirname "$0")/../.."
minutes=${MINUTES:-3}
cases=${CASES:-20000}
cargo test --release --lib proptests --no-run
# The clock starts once the build is done.
end=$(( $(date +%s) + minutes * 60 ))
round=0
while [ "$round" -eq 0 ] || [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    echo "fuzz round $round: $cases cases per property"
    PROPTEST_CASES=$cases cargo test --release --lib proptests -- --quiet
done
echo "fuzz: $round rounds of $cases cases per property, no failure"
