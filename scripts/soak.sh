#!/usr/bin/env bash
# A long steady run of the engine: `selfheal bench --soak LENGTH` at 80 % of
# the capacity it measures first, against `selfheal broker` (librdkafka's
# mock cluster in a process of its own, so the resident memory the bench
# samples is the engine's and the load generator's, not the broker's).
#
#   scripts/soak.sh                     # 30 minutes
#   scripts/soak.sh 5m --out target/soak.json
#
# The embedded broker serves every request on one thread and keeps at
# most 5 MB per partition, dropping the oldest records beyond that: the
# topics get 12 partitions (`SOAK_PARTITIONS`; many more and the broker's
# own thread is the bottleneck), the fill is 400,000 samples (so it fits),
# the engine runs at_least_once, and a soak that falls behind by more than
# the few seconds a partition holds shows it as records the engine never
# consumed (`lag_after_drain`). Flags given after LENGTH override these.
# A broker with retention (the Apache Kafka of deploy/docker-compose.yaml)
# can be soaked directly: `selfheal bench --brokers B --soak 30m`.
set -euo pipefail
cd "$(dirname "$0")/.."

length=${1:-30m}
[[ $# -gt 0 ]] && shift
partitions=${SOAK_PARTITIONS:-12}
prefix="selfheal-soak-$(date +%s)."
# The broker's files, one directory per run so two soaks do not clash;
# kept (and named) when the run fails.
mkdir -p target/soak
dir=$(mktemp -d target/soak/broker.XXXXXX)

cargo build --release --quiet
./target/release/selfheal broker --partitions "$partitions" --topic-prefix "$prefix" \
    >"$dir/broker.env" 2>"$dir/broker.log" &
broker=$!
finish() {
    local rc=$?
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    if [[ $rc -eq 0 ]]; then
        rm -rf "$dir"
    else
        echo "soak.sh: the broker's output is in $dir" >&2
    fi
}
trap finish EXIT
for _ in $(seq 300); do
    grep -q '^SELFHEAL_BROKERS=' "$dir/broker.env" 2>/dev/null && break
    kill -0 "$broker" 2>/dev/null || { cat "$dir/broker.log" >&2; exit 1; }
    sleep 0.1
done
brokers=$(sed -n 's/^SELFHEAL_BROKERS=//p' "$dir/broker.env")
[[ -n $brokers ]] || { echo "soak.sh: the broker did not start" >&2; cat "$dir/broker.log" >&2; exit 1; }
./target/release/selfheal bench --brokers "$brokers" --topic-prefix "$prefix" \
    --partitions "$partitions" --samples 400000 \
    --processing-guarantee at_least_once \
    --broker-name "selfheal broker (librdkafka mock cluster, own process)" \
    --soak "$length" "$@"
