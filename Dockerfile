# One image for the hub and the workers; `make image` builds it, `make image-tls` the variant
# with bcc for `tap --tls` (docs/CLUSTER.md, "The image"). The test suite builds both and runs
# them with the manifests' own pod settings (tests/image/).
#
# Debian's python3, not python.org's: bcc (python3-bpfcc) is built for Debian's interpreter,
# and the venv below is made from that same interpreter, so the worker imports bcc in the TLS
# variant. The project and its dependencies come as wheels:
#   WHEELS=context  from build/wheels in the build context, made by `make wheels` on a host whose
#                   python3 and libc are this base's (Debian 12, Python 3.11: the dev machine);
#   WHEELS=index    built here from the package index (any host, any architecture: the release).
ARG BASE=debian:bookworm-slim
ARG VARIANT=lean
ARG WHEELS=context

# What both variants run on: the interpreter, libpcap for the pcap source, CA certificates for
# scripts' webhooks. Nothing of the project yet, so code changes rebuild none of it.
FROM ${BASE} AS os-lean
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libpcap0.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 shark \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin shark

# bcc and the LLVM it compiles with: 370 MB more, so only in the TLS variant.
FROM os-lean AS os-tls
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-bpfcc \
 && rm -rf /var/lib/apt/lists/*

FROM os-lean AS venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/kubectl-shark

FROM venv AS wheels-context
COPY build/wheels/deps /wheels/deps

FROM venv AS wheels-index
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libpcap-dev python3-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY shark /src/shark
COPY hub /src/hub
COPY worker /src/worker
# The dissection hot path compiled with mypyc (shark/compiled.py) before the wheel is made, so
# that the wheel carries it (pyproject.toml, package-data). mypy goes in a venv of its own, which
# no later stage copies; a release whose build failed stops here rather than ship pure Python.
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "/src[native]" \
 && cd /src && /opt/build/bin/python -m shark.build_native \
 && /opt/build/bin/python -m shark.build_native status | grep -qx 'dissection hot path: compiled'
# Built with the build venv's pip and `wheel` (Debian's pip 23 cannot wheel a setup.py-only
# project, esprima and pypcap, without it): same interpreter, and nothing of it reaches the image.
RUN /opt/build/bin/pip install --no-cache-dir wheel \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels/deps /src \
 && mkdir /wheels/project && mv /wheels/deps/kubectl_shark-*.whl /wheels/project/

# The dependencies first: a layer that code changes leave alone. kubectl-shark uses the
# kubernetes client's synchronous API; its asyncio copy (kubernetes/aio, 68 MB) is never imported.
FROM wheels-${WHEELS} AS deps
RUN /opt/kubectl-shark/bin/pip install --no-cache-dir --no-index /wheels/deps/*.whl \
 && rm -rf /opt/kubectl-shark/lib/python3.11/site-packages/kubernetes/aio

FROM deps AS project-context
COPY build/wheels/project /wheels/project

FROM deps AS project-index

FROM project-${WHEELS} AS installed
RUN /opt/kubectl-shark/bin/pip install --no-cache-dir --no-index --no-deps /wheels/project/*.whl \
 && /opt/kubectl-shark/bin/pip uninstall -y -q pip setuptools
# The hub serves the UI from spa/ beside its package (hub/app.py, SPA_DIR).
COPY spa /opt/kubectl-shark/lib/python3.11/site-packages/spa

FROM os-${VARIANT}
LABEL org.opencontainers.image.title="kubectl-shark" \
      org.opencontainers.image.description="kubectl-shark's hub and worker (docs/CLUSTER.md)" \
      org.opencontainers.image.source="https://github.com/kubectl-shark/kubectl-shark" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=installed /opt/kubectl-shark /opt/kubectl-shark
# `python` is the venv's (a link to Debian's python3), as the manifests' commands expect.
ENV PATH=/opt/kubectl-shark/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The hub runs as this user; the workers' pods ask for root (only for the capture capabilities).
USER 10001:10001
EXPOSE 8899 8897
CMD ["python", "-m", "hub", "--kube", "--listen", "0.0.0.0:8899"]
