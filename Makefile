# Two commands do all set-up: `make run` starts the tower, `make test` runs every check.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
PY := .venv/bin/python

.PHONY: run demo test lint typecheck pytest clean

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet
	touch $@

run: .venv/.synced
	.venv/bin/tower serve

demo: .venv/.synced
	.venv/bin/tower demo --live

test: lint typecheck pytest

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: .venv/.synced
	.venv/bin/mypy

pytest: .venv/.synced
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .venv .tools var
