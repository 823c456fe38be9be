# The two commands a newcomer runs: `make drill` and `make test`.
# Each bootstraps what it needs: Debian packages, a virtualenv, the Python packages.
# `make deps` installs what a worker needs and no more; `make drill` adds what the
# simulated sites need, `make test` what only the tests need. Python packages come
# from the lock files in requirements/ (exact versions, checked by their hashes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK      := requirements/runtime.txt
TEST_LOCK := requirements/test.txt
PIP_TOOLS := pip-tools==7.6.2

.PHONY: drill nemesis test mutate bench deps sysdeps drill-sysdeps testdeps test-sysdeps lock clean

# The drill runs on embedded Prefect, with its own Prefect home (var/prefect).
# The first start of embedded Prefect in a new home creates and migrates its
# database: 16-40 s on 2 busy cores, past Prefect's default limit of 20 s;
# the limit here is 120 s. (antelope-ha sets the same limit when none is set,
# and creates PREFECT_HOME: see deployments/cli.py.)
DRILL_HOME ?= $(CURDIR)/var/prefect
drill: deps drill-sysdeps
	mkdir -p $(DRILL_HOME)
	PREFECT_HOME=$(DRILL_HOME) PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
	PREFECT_LOGGING_LEVEL=WARNING $(VENV)/bin/antelope-ha drill $(ARGS)

# The nemesis: CYCLES incident cycles under faults drawn from SEED on a simulated pair,
# judged by an independent checker (rehearsal/; docs/reliability.md, section 7). It starts
# a Prefect server on a PostgreSQL cluster of its own, as deployed, and restarts it as one
# of the faults; ARGS="--prefect embedded" runs it on embedded Prefect instead. A long run
# in parts: ARGS="--workdir DIR --minutes M" stops it after M minutes, between two cycles
# (so does Ctrl-C; a second Ctrl-C stops it at once), and ARGS="--resume --workdir DIR" goes on.
CYCLES ?= 10
SEED   ?= 1
nemesis: deps drill-sysdeps
	$(call install_debs,postgresql)
	mkdir -p $(DRILL_HOME)
	PREFECT_HOME=$(DRILL_HOME) PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
	PREFECT_LOGGING_LEVEL=WARNING $(PY) -m rehearsal.nemesis --cycles $(CYCLES) --seed $(SEED) $(ARGS)

# Two workers, whole modules each (pytest-xdist): most of a slow test's time is
# waiting on the simulated sites and the Prefect server, so two share the two
# cores; tests/conftest.py hands out the slowest modules first (xdist would
# otherwise order them by their number of tests). TEST_WORKERS=0
# runs them in this process, one after the other.
TEST_WORKERS ?= 2
test: testdeps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The mutation run over the pure safety modules of the Antelope layer, with their
# fast unit tests ([tool.mutmut] in pyproject.toml); not part of `make test`.
# Prints the score per module and every mutant no test killed (README, Reliability).
mutate: testdeps
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(PY) -m tests.mutation_score

# The production benchmark runs a Prefect server on PostgreSQL, as on real hosts.
bench: deps drill-sysdeps
	$(call install_debs,postgresql)
	$(PY) -m bench

deps: sysdeps $(VENV)/.deps

# What a worker needs: python3-venv for `python3 -m venv`; procps for ps
# (sites with transport local run their commands on the worker).
DEBS := python3-venv procps
# What the simulated sites of the drill and the benchmarks need: a real sshd each.
DRILL_DEBS := openssh-server
# What only the tests need, beyond the drill's: chromium drives the approval
# form of the Prefect UI headless in the end-to-end tests; postgresql is the
# database of their Prefect server, as on real hosts; systemd brings
# systemd-analyze, which checks the units under deployments/systemd.
TEST_DEBS := $(DRILL_DEBS) chromium postgresql systemd

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

drill-sysdeps:
	$(call install_debs,$(DRILL_DEBS))

testdeps: deps test-sysdeps $(VENV)/.testdeps

test-sysdeps:
	$(call install_debs,$(TEST_DEBS))

# The lock holds setuptools too (the build backend), so the project installs
# without fetching anything unchecked: --no-build-isolation.
$(VENV)/.deps: $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.testdeps: $(TEST_LOCK) $(VENV)/.deps
	$(PY) -m pip install -q --require-hashes -r $(TEST_LOCK)
	touch $@

# After changing the dependencies in pyproject.toml: new lock files. The test
# lock starts from the runtime one, so both pin the same versions.
lock:
	test -x build/lock-tools/bin/pip-compile || \
	  ($(PYTHON) -m venv build/lock-tools && build/lock-tools/bin/pip install -q $(PIP_TOOLS))
	build/lock-tools/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	  --no-emit-find-links --no-emit-index-url --no-emit-trusted-host -o $(LOCK) pyproject.toml
	cp $(LOCK) $(TEST_LOCK)
	build/lock-tools/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	  --no-emit-find-links --no-emit-index-url --no-emit-trusted-host --extra test -o $(TEST_LOCK) pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache build mutants *.egg-info
