# filterd — see README.md.  `make run` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/filterd.yaml
# Debian packages the tests drive: a real browser for the web UI; dnsmasq and busybox's udhcpc
# for DHCP between network namespaces (iproute2); shellcheck and systemd-analyze for packaging/;
# faketime (libfaketime) for the clock campaign (tests/e2e/test_clocks.py); certutil
# (libnss3-tools) to trust the house CA in a Chromium profile; sslscan for Wapiti's TLS checks;
# kdig (knot-dnsutils) as a DNS-over-TLS client; ieee-data for device makers (webui/vendors.py).
TEST_DEBS := chromium chromium-driver dnsmasq-base busybox iproute2 shellcheck systemd faketime libnss3-tools sslscan knot-dnsutils ieee-data
# `make deb-test` also needs debootstrap (a minimal Debian 12 root; dpkg-deb builds the package).
DEB_TEST_DEBS := debootstrap
VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml)
DEB := build/filterd_$(VERSION)_all.deb

# Wapiti, the web vulnerability scanner of tests/e2e/test_scanner.py, in a virtualenv of its own:
# it pins libraries (Flask among them) that must not replace the web UI's in .venv.
SCANNER_VENV := .venv-scanner
WAPITI := wapiti3==3.2.3

.PHONY: run test bench fuzz venv debs deb deb-test clean scanner scan

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(SCANNER_VENV)/.installed:
	$(PYTHON) -m venv $(SCANNER_VENV)
	$(SCANNER_VENV)/bin/python -m pip install -q '$(WAPITI)'
	touch $@

scanner: $(SCANNER_VENV)/.installed

# The daemon and the web UI on unprivileged ports; Ctrl-C stops both. The trap signals the two
# by pid (`kill 0` would signal this shell too and run the trap again until its stack overflows).
run: venv
	@echo "DNS on the address in $(CONFIG) (dns.listen); web UI: http://127.0.0.1:8080/"
	@code=$$($(VENV)/bin/filterd-webui --config $(CONFIG) --setup-code) && \
	if [ -n "$$code" ]; then echo "No password yet: the setup page asks for this setup code: $$code"; fi
	@$(PY) -m filterd run --config $(CONFIG) & daemon=$$!; \
	$(VENV)/bin/filterd-webui --config $(CONFIG) & webui=$$!; \
	trap 'kill $$daemon $$webui 2>/dev/null; wait; exit 0' INT TERM EXIT; \
	wait

debs:
	@missing=""; for p in $(TEST_DEBS) $(EXTRA_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi

# axe-core, the accessibility checker the browser tests inject into every page (pinned; from
# npm's registry as this machine's npm is configured). tests/e2e/browser.py finds it here.
AXE_VERSION := 4.10.3
AXE := .cache/axe-core-$(AXE_VERSION)/axe.min.js

$(AXE):
	@command -v npm >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm >/dev/null; }
	mkdir -p $(dir $(AXE))
	cd $(dir $(AXE)) && npm pack -q axe-core@$(AXE_VERSION) >/dev/null && tar -xzf axe-core-$(AXE_VERSION).tgz --strip-components=1 package/axe.min.js && rm axe-core-$(AXE_VERSION).tgz

test: venv debs scanner $(AXE)
	$(VENV)/bin/bandit -q -r filterd webui -ll
	AXE_JS=$(AXE) $(PY) -m pytest -q

# filterd_<version>_all.deb: depends on Debian 12's own python3-* libraries (packaging/debian/).
deb:
	packaging/debian/build.sh build

# The package in a fresh Debian 12 root: apt install, filterd check, unit tests, one DNS
# answer; install.sh in a second root. Needs root; the debootstrapped root is cached.
deb-test: deb
	@$(MAKE) --no-print-directory debs EXTRA_DEBS="$(DEB_TEST_DEBS)" TEST_DEBS=
	timeout 1200 packaging/deb-test.sh $(DEB)

# Wapiti over the admin UI with every offline module, logged in too (minutes; `make test` runs
# the quick modules). Findings beyond the test's allowlist fail; the summary is printed and kept
# in tests/artifacts/wapiti-summary.txt.
scan: venv debs scanner
	FILTERD_SCAN=full $(PY) -m pytest -q -s --timeout 1800 tests/e2e/test_scanner.py

bench: venv
	$(PY) tests/bench/run_bench.py

# The long fault campaign against the real daemon (tests/fault_campaign.py: 100,000 mutated
# datagrams, 20,000 TCP messages, figures printed), then coverage-guided fuzzing of the query
# and upstream-answer parsers with atheris when it installs from PyPI (skipped otherwise).
FUZZ_RUNS ?= 300000
fuzz: venv
	$(PY) tests/fault_campaign.py --udp 100000 --tcp 20000
	@if $(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris >/dev/null 2>&1; then \
	  for kind in query answer; do \
	    corpus=$$(mktemp -d); \
	    echo "atheris: $$kind parser, $(FUZZ_RUNS) runs"; \
	    $(PY) tests/fuzz_parsers.py $$kind -runs=$(FUZZ_RUNS) $$corpus >$$corpus.log 2>&1; status=$$?; \
	    grep -E '^Done|ERROR|Error|Traceback' $$corpus.log | tail -20; \
	    rm -rf $$corpus $$corpus.log; [ $$status -eq 0 ] || exit $$status; \
	  done; \
	else echo "atheris does not install here: coverage fuzzing skipped"; fi

clean:
	rm -rf $(VENV) $(SCANNER_VENV) build *.egg-info
