# Two commands do all set-up: `make run` starts the tower and its dashboard (`make run DEMO=1`: with the
# simulated distributor and a local Slack stand-in), `make test` runs every check.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
PY := .venv/bin/python

.PHONY: help run demo test lint typecheck pytest test-tools clean

help:
	@echo "make run            the tower and its dashboard on the embedded store (var/tower)"
	@echo "make run DEMO=1     the same, with the simulated distributor and a local Slack stand-in"
	@echo "make demo           send the simulated distributor to a tower already running (tower demo --live)"
	@echo "make test           lint, type-check and every test (about 13 minutes on 2 slow cores; installs chromium"
	@echo "                    and prometheus with apt-get when root on Debian; PYTEST_ARGS=... to pass options)"
	@echo "make lint | typecheck | pytest    one part of make test"
	@echo "make clean          remove .venv, .tools and var (the data of make run: the store, tokens, backups)"

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as in many containers), Python would
# otherwise compile every module it imports from source in every process, about 2 s for each start of `tower`.
.venv/.synced: $(UV) uv.lock pyproject.toml Makefile
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

# The project's own modules are compiled first, for the same reason (a second; unchanged files are skipped).
PACKAGES := alerting collector dashboard kernel reconcilers sla_rules tower tests
COMPILE := $(PY) -m compileall -q -j 0 $(PACKAGES)

run: .venv/.synced
	$(COMPILE)
	.venv/bin/tower serve $(if $(DEMO),--demo)

demo: .venv/.synced
	.venv/bin/tower demo --live

test: lint typecheck pytest

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: .venv/.synced
	.venv/bin/mypy

# Tests drive two programs from Debian's packages: headless Chromium (the dashboard's browser test) and
# Prometheus (scraping /metrics, evaluating docs/prometheus/tower-alerts.yml). Install them when missing and
# apt-get can (root, Debian). Elsewhere those tests say they are skipped and why.
DEBIAN_TOOLS := chromium prometheus
test-tools:
	@for pkg in $(DEBIAN_TOOLS); do \
		if ! command -v $$pkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's $$pkg for the tests"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkg >/dev/null 2>&1 \
				|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkg >/dev/null); \
		fi; \
	done

# Two test processes (pytest-xdist), a module (or the dashboard package) to a process at a time, in the order
# tests/conftest.py gives: each process has its own embedded store and keeps a module's fixtures to itself.
# PYTEST_WORKERS=0 runs in this one process.
PYTEST_WORKERS ?= 2
pytest: .venv/.synced test-tools
	$(COMPILE)
	$(PY) -m pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

clean:
	rm -rf .venv .tools var
