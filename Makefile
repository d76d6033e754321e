# The two commands: `make serve` (server on the standard checkpoint) and `make test` (whole suite).
# Each sets up .venv on first use.
.PHONY: serve test setup demo lint

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/dvn serve

test:
	bash scripts/test.sh

demo: setup
	.venv/bin/dvn train --preset demo --out model_store/checkpoints/demo

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
