# The two commands a newcomer runs: `make demo` (the main job on the local lab) and `make test`.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: demo test bootstrap lint unit lab lab-down lab-status bench clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/lagpilot demo $(DEMO_ARGS)

test: bootstrap lint
	@bash scripts/run-tests.sh $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/ruff check .
	bash scripts/typecheck.sh

unit: bootstrap
	$(VENV)/pytest -m unit -q

lab: bootstrap
	$(VENV)/lagpilot lab up

lab-down:
	$(VENV)/lagpilot lab down

lab-status:
	$(VENV)/lagpilot lab status

bench: bootstrap
	@for b in bench/*/run.sh; do echo "== $$b"; bash $$b || exit 1; done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
