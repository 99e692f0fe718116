# make image   the hub/worker image: docker build -t $(IMAGE) .  (TLS=1 adds bcc for tap --tls)
# make krew    the krew archive in $(DIST) and its sha256 and version in $(PLUGIN)
# Neither is needed to develop or test: ./dev run and ./dev test are.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= kubectl-shark:$(VERSION)
ENGINE ?= docker
TLS ?= 0
DIST ?= build/krew
PLUGIN ?= plugin.yaml
ARCHIVE := $(DIST)/kubectl-shark-$(VERSION).tar.gz

.PHONY: image krew

image:
	$(ENGINE) build --build-arg TLS=$(TLS) -t $(IMAGE) .

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
