# The two commands of the README: `make serve` and `make test`. Both create the venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := examples/models

.PHONY: serve test proto lint bench bench-peers demo-models clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./clients/python
	touch $(STAMP)

$(DEMO)/half_plus_two/1/saved_model.pb: | $(STAMP)
	$(PY) examples/export_half_plus_two.py --output_dir=$(DEMO)/half_plus_two --model_version=1

demo-models: $(DEMO)/half_plus_two/1/saved_model.pb

serve: $(STAMP) demo-models
	$(PY) -m svc --port=8500 --rest_api_port=8501 --model_name=half_plus_two \
		--model_base_path=$(CURDIR)/$(DEMO)/half_plus_two $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

proto: $(STAMP)
	$(PY) proto/generate.py

lint: $(STAMP)
	$(PY) -m ruff check svc tests bench examples proto clients/python
	$(PY) -m mypy svc tests clients/python/aspired_client
	$(PY) proto/generate.py --check
	$(VENV)/bin/lint-imports

bench: $(STAMP) demo-models
	$(PY) bench/run_all.py

# Opt-in (not in `make test`): aspired against KServe, MLServer and PyTriton on the same models (bench/peers_bench.py;
# makes venvs under bench/out/peers/, needs wrk, h2load and Debian's python3.11; ARGS="--runs 1 --duration 2").
bench-peers: $(STAMP)
	$(PY) bench/peers_bench.py $(ARGS)

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
