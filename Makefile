# The two commands a newcomer runs: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: deps test unit bench demo demo-stop clean

deps:
	@bash .ci/install-deps

test: deps
	$(PY) -m pytest tests -q

unit: deps
	$(PY) -m pytest tests/unit -q

bench: deps
	$(PY) -m bench $(BENCH_ARGS)

demo: deps
	$(PY) -m examples.demo up

demo-stop:
	$(PY) -m examples.demo down

clean:
	rm -rf $(VENV) build *.egg-info
