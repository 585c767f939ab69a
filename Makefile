# Set-up and the two Quick start commands. `make demo` runs the main job, `make test` the tests.
# Both install what is missing first: Debian packages (apt-get, as root or with sudo) and .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# Every host tool the built-in plugins and the end-to-end tests use.
APT_PACKAGES := python3-venv python3-pip git ca-certificates \
	qemu-system-x86 qemu-utils mmdebstrap debian-archive-keyring libguestfs-tools \
	e2fsprogs fdisk fuse3 zstd cpio busybox-static fakeroot uidmap kmod openssh-client curl \
	build-essential flex bison bc libelf-dev libssl-dev dwarves xz-utils linux-source \
	docker-registry
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps venv demo test lint bench clean
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	$(VENV)/bin/lvh pipeline run examples/quickstart.yaml

test: deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: deps venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) _data examples/_data
