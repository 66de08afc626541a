# filterd — see README.md.  `make run` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/filterd.yaml
# Debian packages the tests drive: a real browser for the web UI, dnsmasq for DHCP later.
TEST_DEBS := chromium chromium-driver

.PHONY: run test bench venv debs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The daemon and the web UI on unprivileged ports; Ctrl-C stops both.
run: venv
	@echo "DNS on the address in $(CONFIG) (dns.listen); web UI: http://127.0.0.1:8080/"
	@trap 'kill 0' INT TERM EXIT; \
	$(PY) -m filterd run --config $(CONFIG) & \
	$(VENV)/bin/filterd-webui --config $(CONFIG) & \
	wait

debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi

test: venv debs
	$(VENV)/bin/bandit -q -r filterd webui -ll
	$(PY) -m pytest -q

bench: venv
	$(PY) tests/bench/run_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
