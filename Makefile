# `make test` and `make demo` work on a fresh Debian 12 or 13 machine (as root, or with sudo):
# they install the system packages that are missing, build .venv, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := orthanc fuse3 libfuse3-dev pkg-config dcmtk curl openssl util-linux procps systemd man-db litmus rclone \
                attr libglib2.0-bin cadaver python3-venv python3-dev gcc libc6-dev debootstrap iproute2 patch
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

# The suite runs against this machine's Orthanc and against the other Debian release's (Debian 12
# ships 1.10.1, Debian 13 1.12.7), from a minimal root made once per machine outside the work tree
# and run with chroot.  ORTHANC_MATRIX=host runs the first only.
DEBIAN_MIRROR ?= http://deb.debian.org/debian
OTHER_SUITE := $(shell . /etc/os-release 2>/dev/null; [ "$$VERSION_CODENAME" = trixie ] && echo bookworm || echo trixie)
OTHER_ROOT ?= /var/cache/orthancfs/$(OTHER_SUITE)-orthanc
ORTHANC_MATRIX ?= host other

PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all system-deps venv test lint demo bench live soak install clean other-orthanc

all: test

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# pyfuse3 first, with our patch (.ci/install-pyfuse3): the listing cache of orthancfs/fuse/listings.py.
$(BIN)/orthancfs: setup.cfg pyproject.toml .ci/install-pyfuse3 .ci/pyfuse3-cache-readdir.patch | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	sh .ci/install-pyfuse3 $(BIN)/pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: system-deps $(BIN)/orthancfs

lint: venv
	$(BIN)/ruff check orthancfs tests

test: venv $(if $(filter other,$(ORTHANC_MATRIX)),other-orthanc)
	$(BIN)/ruff check orthancfs tests
	$(if $(filter host,$(ORTHANC_MATRIX)),$(BIN)/python -m pytest $(PYTEST_ARGS))
	$(if $(filter other,$(ORTHANC_MATRIX)),ORTHANC_ROOT=$(OTHER_ROOT) $(BIN)/python -m pytest $(PYTEST_ARGS))

other-orthanc: $(OTHER_ROOT)/usr/sbin/Orthanc

$(OTHER_ROOT)/usr/sbin/Orthanc: | system-deps
	rm -rf $(OTHER_ROOT).tmp
	mkdir -p $(dir $(OTHER_ROOT))
	$(SUDO) debootstrap --variant=minbase $(OTHER_SUITE) $(OTHER_ROOT).tmp $(DEBIAN_MIRROR)
	@# apt, not debootstrap --include: debootstrap does not resolve virtual packages (bookworm's orthanc
	@# needs one)
	DEBIAN_FRONTEND=noninteractive $(SUDO) chroot $(OTHER_ROOT).tmp apt-get install -y -q --no-install-recommends orthanc
	$(SUDO) chroot $(OTHER_ROOT).tmp apt-get clean
	mv $(OTHER_ROOT).tmp $(OTHER_ROOT)

demo: venv
	$(BIN)/orthancfs demo pacs

# Side-by-side benchmark against rclone over Orthanc's own WebDAV (BENCH_ARGS="--large" for 100,000 patients).
bench: venv
	@dpkg -s rclone >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q rclone)
	$(BIN)/python bench/run.py --output bench/RESULTS.md $(BENCH_ARGS)

# How soon others' arrivals and deletions show, and what following Orthanc's change log costs.
live: venv
	@dpkg -s rclone >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q rclone)
	$(BIN)/python bench/live.py --output bench/RESULTS.md $(LIVE_ARGS)

# Writers and readers on one mount for minutes: every file accounted for, descriptors and memory flat.
soak: venv
	$(BIN)/python bench/soak.py --output bench/RESULTS.md $(SOAK_ARGS)

# System-wide install: the command (its own venv under $(PREFIX)/lib/orthancfs),
# mount.fuse3's view of it, man pages, the systemd template.
install: system-deps
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)/lib/orthancfs
	sh .ci/install-pyfuse3 $(DESTDIR)$(PREFIX)/lib/orthancfs/bin/pip
	$(DESTDIR)$(PREFIX)/lib/orthancfs/bin/pip install -q .
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/orthancfs
	ln -sf $(PREFIX)/lib/orthancfs/bin/orthancfs $(DESTDIR)$(PREFIX)/bin/orthancfs
	install -m 644 man/orthancfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/orthancfs.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	sed 's|/usr/local/bin/orthancfs|$(PREFIX)/bin/orthancfs|' systemd/orthancfs@.service \
	  > $(DESTDIR)/etc/systemd/system/orthancfs@.service
	chmod 700 $(DESTDIR)/etc/orthancfs

clean:
	-fusermount3 -u -z pacs 2>/dev/null
	rm -rf $(VENV) build *.egg-info .pytest_cache
