#!/usr/bin/env bash
# Runs `selfheal bench` against a fresh Tansu broker (installed on first
# use, started on a free loopback port by scripts/broker.sh, stopped at the
# end) and prints its JSON report. Arguments go to `selfheal bench`, e.g.
#
#   scripts/bench.sh --out target/bench.json
#   scripts/bench.sh --soak 30m --soak-load 0.5
#
# To measure another broker, run `cargo run --release -- bench --brokers
# HOST:PORT` instead.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/bench-broker
scripts/broker.sh stop --dir "$dir" >/dev/null 2>&1 || true
env_line=$(scripts/broker.sh start --dir "$dir" --partitions 2)
eval "$env_line"
trap 'scripts/broker.sh stop --dir "$dir" >/dev/null 2>&1 || true' EXIT
cargo build --release --quiet
tansu_bin=${TANSU:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}
version=$("$tansu_bin" --version 2>/dev/null | head -1 || true)
./target/release/selfheal bench --brokers "$SELFHEAL_BROKERS" \
    --broker-name "${version:-tansu}, memory storage, same machine" "$@"
