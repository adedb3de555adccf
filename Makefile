# The two commands a newcomer runs: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: deps test unit bench demo demo-stop image fleet fleet-stop clean

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

# The registrar's container image, built offline (examples/registrar_image.py).
image: deps
	$(PY) -m examples.registrar_image

# The reference layout: three nodes, three Consul servers, the registrar image everywhere, nginx on two.
fleet: deps
	$(PY) -m examples.fleet up

fleet-stop:
	$(PY) -m examples.fleet down

clean:
	rm -rf $(VENV) build *.egg-info
