# The project's own install steps: CI runs `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

.PHONY: install system-deps lint test run bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# PostgreSQL backs the multi-replica ledger (its tests start a private cluster);
# promtool (Debian's prometheus package) checks the exported metrics and the alert rules.
system-deps:
	@if [ -z "$(PG_INITDB)" ] || ! command -v promtool >/dev/null 2>&1; then \
		echo "installing postgresql and prometheus (promtool) from Debian"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			postgresql prometheus >/dev/null; \
	fi

lint: install
	$(VENV)/bin/ruff check consumer devtools tests bench
	$(VENV)/bin/ruff format --check consumer devtools tests bench
	$(VENV)/bin/mypy

test: install system-deps lint
	$(PY) -m pytest

run: install
	$(PY) -m devtools.demo $(ARGS)

bench: install system-deps
	$(PY) -m bench.ingest
	$(PY) -m bench.report
	$(PY) -m bench.throughput

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
