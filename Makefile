# The two commands a newcomer runs: `make drill` and `make test`.
# Each bootstraps what it needs: Debian packages, a virtualenv, the Python packages.
# `make deps` installs what running needs; `make test` adds what only the tests need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: drill test bench deps sysdeps testdeps clean

# The drill runs on embedded Prefect, with its own Prefect home under var/.
drill: deps
	mkdir -p var/prefect
	PREFECT_HOME=$(CURDIR)/var/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
	PREFECT_LOGGING_LEVEL=WARNING $(PY) -m flows.drill

test: testdeps
	$(PY) -m pytest -q

# The production benchmark runs a Prefect server on PostgreSQL, as on real hosts.
bench: deps
	$(call install_debs,postgresql)
	$(PY) -m bench

deps: sysdeps $(STAMP)

# What the project needs to run (workers, the drill): python3-venv for
# `python3 -m venv`; procps for ps; openssh-server: a real sshd per simulated
# site of the drill.
DEBS := python3-venv procps openssh-server
# What only the tests need: chromium drives the approval form of the Prefect UI
# headless in the end-to-end tests; postgresql is the database of their Prefect
# server, as on real hosts.
TEST_DEBS := chromium postgresql

# Install the Debian packages of $(1) that are missing.
define install_debs
	@missing=; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

sysdeps:
	$(call install_debs,$(DEBS))

testdeps: deps
	$(call install_debs,$(TEST_DEBS))

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
