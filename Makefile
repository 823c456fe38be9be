# The two commands a newcomer runs: `make drill` and `make test`.
# Each bootstraps what it needs: Debian packages, a virtualenv, the Python packages.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: drill test bench deps sysdeps clean

# The drill runs on embedded Prefect, with its own Prefect home under var/.
drill: deps
	mkdir -p var/prefect
	PREFECT_HOME=$(CURDIR)/var/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
	PREFECT_LOGGING_LEVEL=WARNING $(PY) -m flows.drill

test: deps
	$(PY) -m pytest -q

bench: deps
	$(PY) -m bench

deps: sysdeps $(STAMP)

# openssh-server: a real sshd per simulated site; chromium: the approval form
# of the Prefect UI, driven headless by the end-to-end tests; postgresql: the
# database of the end-to-end tests' Prefect server, as on real hosts.
DEBS := openssh-server chromium postgresql
sysdeps:
	@missing=; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
