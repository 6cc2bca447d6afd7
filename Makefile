# One command runs what CI runs: `make ci`.
.PHONY: ci test lint bench golden

ci:
	bash .ci/run

# Every test, with a real broker (Tansu) started for the live tests.
test:
	scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Criterion bench of the core alone; prints samples/s.
bench:
	cargo bench --bench core

# Rewrite the golden scenario outputs from the current behaviour; review the diff.
golden:
	UPDATE_GOLDEN=1 cargo test --test scenarios
