# Yihao: `make demo` runs the demo network on http://127.0.0.1:8080; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DATA ?= ./data/demo
export YIHAO_DATA_DIR ?= $(DEMO_DATA)

.PHONY: demo test lint format web install lock clean fuzz bench chaos

# The versions in requirements.lock (hash-checked), then the project itself without
# resolving anything again: a fresh machine gets what the tests passed with.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Recompile requirements.lock from pyproject.toml's ranges (dependencies and the `test`
# extra). Pins already in the lock are kept while the ranges allow them; pass
# LOCK_ARGS=--upgrade (or --upgrade-package NAME) to move them.
LOCK_ARGS ?=
lock: install
	$(BIN)/uv pip compile --quiet pyproject.toml --extra test --generate-hashes \
		--python-version 3.11 --custom-compile-command "make lock" $(LOCK_ARGS) -o requirements.lock

# The browser client, when it is present (web/package.json).
web:
	@if [ -f web/package.json ]; then cd web && npm ci --no-audit --no-fund && npm run build; fi

demo: install web
	$(BIN)/yihao migrate
	$(BIN)/yihao seed-demo
	YIHAO_PAYMENTS_SANDBOX=true $(BIN)/yihao serve --host 127.0.0.1 --port 8080

# Lint, format check and strict typing first, so CI enforces them as it does the tests.
# The tests run on every core (pytest-xdist); TEST_WORKERS=0 runs them in one process. The
# timing-bound ones (marked `serial`, tests/conftest.py) run after, alone; both parts always run.
TEST_WORKERS ?= auto
test: lint
	status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" || status=$$?; \
	$(BIN)/pytest -m serial || status=$$?; \
	exit $$status

lint: install
	$(BIN)/ruff check server tests scripts chaos
	$(BIN)/ruff format --check server tests scripts chaos
	$(BIN)/mypy server

format: install
	$(BIN)/ruff format server tests scripts chaos
	$(BIN)/ruff check --fix server tests scripts chaos

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

# A deeper fuzzing run than `make test`'s: schemathesis over every REST operation and
# Hypothesis over every Socket.IO event (FUZZ_EXAMPLES examples each).
FUZZ_EXAMPLES ?= 100
fuzz: install
	YIHAO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -s tests/security/test_fuzz_openapi.py tests/security/test_fuzz_socket.py

# Every benchmark beside its peer, stepping the offered rate to find capacity; writes
# docs/performance.md. Set YIHAO_BENCH_DATABASE_URL / YIHAO_BENCH_REDIS_URL for the
# PostgreSQL and Redis rows. BENCH_ARGS="--only consult_chat" runs a part.
BENCH_ARGS ?=
bench: install web
	cd bench/node_peer && npm ci --no-audit --no-fund --silent
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# Faults on a real 3-node cluster (nginx, PostgreSQL, a private Redis) under consult chat and
# prescriptions: node kill -9, Redis killed 5 s and 30 s, Redis link delay, PostgreSQL cut.
# Prints sent/received/lost/duplicated and the time to converge per case (docs/chaos.md).
# YIHAO_CHAOS_DATABASE_URL names a PostgreSQL server (an administrator's URL); the suite
# creates and drops a database of its own there. CHAOS_ARGS="--only pg_cut --json out.json".
CHAOS_ARGS ?=
chaos: install
	$(BIN)/python chaos/run.py $(CHAOS_ARGS)
