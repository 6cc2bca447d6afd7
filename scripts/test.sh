#!/usr/bin/env bash
# Runs every test: unit tests, golden scenarios, property tests, CLI tests,
# and the live integration tests against a real broker. The broker is Tansu,
# installed on first use (`cargo install tansu`, 10-20 minutes once) and
# started on a free loopback port by scripts/broker.sh; it is stopped when
# the tests end. Arguments go to `cargo test` (e.g. `scripts/test.sh --test live`).
# A failing test binary does not stop the others (`--no-fail-fast`): the run
# ends with every failure, not only the first.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/test-broker
env_line=$(scripts/broker.sh start --dir "$dir" --partitions 3)
eval "$env_line"
trap 'scripts/broker.sh stop --dir "$dir" >/dev/null 2>&1 || true' EXIT
echo "test broker: Tansu at $SELFHEAL_BROKERS" >&2

# The integration tests read the broker from SELFHEAL_TEST_BROKERS; with
# SELFHEAL_REQUIRE_BROKER=1 a test that finds no broker fails instead of
# being skipped.
export SELFHEAL_TEST_BROKERS="$SELFHEAL_BROKERS"
export SELFHEAL_REQUIRE_BROKER=1
unset SELFHEAL_BROKERS
cargo test --no-fail-fast "$@"
