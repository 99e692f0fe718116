# make image       the hub/worker image, $(IMAGE) (docs/CLUSTER.md, "The image")
# make image-tls   the same with bcc for `tap --tls`, $(IMAGE_TLS)
# make krew        the krew archive in $(DIST) and its sha256 and version in $(PLUGIN)
# Neither is needed to develop or test: ./dev run and ./dev test are.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The default names are what `kubectl shark tap` deploys (shark/kube/render.py): the release
# workflow pushes them; a fork or a private registry builds with REGISTRY=... and taps with --image.
REGISTRY ?= ghcr.io/kubectl-shark
IMAGE ?= $(REGISTRY)/kubectl-shark:$(VERSION)
IMAGE_TLS ?= $(IMAGE)-tls
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
# podman or docker, the first that answers (asked once)
ifeq ($(origin ENGINE),undefined)
ENGINE := $(shell for e in podman docker; do $$e info >/dev/null 2>&1 && { echo $$e; break; }; done)
endif
BASE ?= debian:bookworm-slim
# context: wheels built here (needs this host's Python to be the base's: Debian 12, Python 3.11);
# index: wheels built inside the image from the package index (any other host)
ifeq ($(origin WHEELS),undefined)
WHEELS := $(shell . /etc/os-release 2>/dev/null; [ "$$VERSION_CODENAME" = bookworm ] \
            && $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
            && echo context || echo index)
endif
# Where no registry can be reached, $(BASE) is made with debootstrap and kept here as a tarball.
BASE_CACHE ?= /var/cache/kubectl-shark
DEBIAN_MIRROR ?= http://deb.debian.org/debian
BASE_TAR := $(BASE_CACHE)/debian-bookworm-slim.tar
DIST ?= build/krew
PLUGIN ?= plugin.yaml
ARCHIVE := $(DIST)/kubectl-shark-$(VERSION).tar.gz

ifeq ($(ENGINE),podman)
# Containers inherit podman's resource limits instead of raising them (containers.conf).
export CONTAINERS_CONF ?= $(CURDIR)/containers.conf
endif
BUILD = $(ENGINE) build --build-arg BASE=$(BASE) --build-arg WHEELS=$(WHEELS)

WHEELS_BUILT := build/wheels/.built
WHEEL_SOURCES := pyproject.toml README.md $(shell find shark hub worker -type f \( -name '*.py' -o -name '*.js' \))

.PHONY: image image-tls engine base-image wheels krew print-%

image: engine base-image $(if $(filter context,$(WHEELS)),$(WHEELS_BUILT))
	$(BUILD) --build-arg VARIANT=lean -t $(IMAGE) .

image-tls: engine base-image $(if $(filter context,$(WHEELS)),$(WHEELS_BUILT))
	$(BUILD) --build-arg VARIANT=tls -t $(IMAGE_TLS) .

engine:
	@test -n "$(ENGINE)" || { echo "make: no container engine answers: install podman" \
	  "(apt-get install podman runc) or start docker, or name one with ENGINE=" >&2; exit 1; }
	@$(ENGINE) info >/dev/null 2>&1 || { echo "make: $(ENGINE) does not answer:" \
	  "$$($(ENGINE) info 2>&1 | grep -v '^ ' | tail -1)" >&2; exit 1; }

# $(BASE) as it is, pulled, or (no registry reachable) a Debian 12 minbase made like Debian's
# -slim images: no docs, man pages or translations, apt lists and archives emptied.
base-image:
	@$(ENGINE) image inspect $(BASE) >/dev/null 2>&1 || $(ENGINE) pull $(BASE) >/dev/null 2>&1 || { \
	  echo "make: cannot pull $(BASE): making it with debootstrap (cached in $(BASE_TAR))" >&2; \
	  $(MAKE) --no-print-directory $(BASE_TAR) && \
	  $(ENGINE) import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	    --change 'CMD ["bash"]' $(BASE_TAR) $(BASE) >/dev/null; }

$(BASE_TAR):
	mkdir -p $(BASE_CACHE)
	rm -rf $@.$$PPID.d
	debootstrap --variant=minbase bookworm $@.$$PPID.d $(DEBIAN_MIRROR) >$@.$$PPID.log
	cd $@.$$PPID.d \
	 && printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
	      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
	      'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/lintian/*' \
	      > etc/dpkg/dpkg.cfg.d/slim \
	 && find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete \
	 && rm -rf usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian/* \
	      var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* \
	 && rm etc/apt/sources.list \
	 && printf '%s\n' 'Types: deb' 'URIs: $(DEBIAN_MIRROR)' 'Suites: bookworm bookworm-updates' \
	      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' '' \
	      'Types: deb' 'URIs: $(DEBIAN_MIRROR)-security' 'Suites: bookworm-security' \
	      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
	      > etc/apt/sources.list.d/debian.sources
	tar --numeric-owner -C $@.$$PPID.d -cf $@.$$PPID.tmp . && mv $@.$$PPID.tmp $@
	rm -rf $@.$$PPID.d $@.$$PPID.log

# Every wheel the image installs, built with this host's Python: the dependencies apart from
# the project, so that the image's layer of dependencies survives changes to the code. Made
# again when the project's sources change (`make -B wheels` to fetch newer dependencies).
wheels: $(WHEELS_BUILT)
# The compiled hot path goes in the project's wheel (pyproject.toml, package-data): built first
# when its sources changed (a no-op when current; without mypy it warns and the wheel is pure).
$(WHEELS_BUILT): $(WHEEL_SOURCES) $(wildcard worker/_native.hash)
	rm -rf build/wheels && mkdir -p build
	$(PYTHON) -m shark.build_native
	SOURCE_DATE_EPOCH=315532800 $(PYTHON) -m pip wheel -q --wheel-dir build/wheels/deps . 2>build/wheels.log \
	  || { cat build/wheels.log >&2; exit 1; }
	mkdir -p build/wheels/project && mv build/wheels/deps/kubectl_shark-*.whl build/wheels/project/
	touch $@

print-%:
	@echo '$($*)'

# A reproducible archive of the tree git knows (sorted, fixed times and owners, gzip -n), with
# one top folder, as the manifest's `files` expect; plugin.yaml itself stays out of it.
krew:
	mkdir -p $(DIST)
	git ls-files -z --cached --others --exclude-standard -- . ':!plugin.yaml' \
	  | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
	  | tar --null -T - --sort=name --mtime='2025-01-01 00:00Z' --owner=0 --group=0 --numeric-owner \
	        --transform 's,^,kubectl-shark-$(VERSION)/,' -cf - \
	  | gzip -n > $(ARCHIVE)
	sha=$$(sha256sum $(ARCHIVE) | cut -d' ' -f1); \
	sed -i -E -e "s/(sha256: \")[0-9a-f]{64}(\")/\1$$sha\2/" \
	          -e "s/v[0-9]+\.[0-9]+\.[0-9]+/v$(VERSION)/g" \
	          -e "s/kubectl-shark-[0-9]+\.[0-9]+\.[0-9]+/kubectl-shark-$(VERSION)/g" $(PLUGIN)
	@echo "wrote $(ARCHIVE) and its sha256 in $(PLUGIN)"
