# One image for the hub and the workers (docs/CLUSTER.md): `make image` builds it.
# Untested here: no container engine runs on the development machine, so this file has not
# been built in this repository's CI. Keep it in step with pyproject.toml.

# Wheels for every dependency (pypcap is compiled against libpcap here, not in the final image).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libpcap-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shark shark
COPY hub hub
COPY worker worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# TLS=1: Debian's bcc (python3-bpfcc, for Debian's python 3.11) for `tap --tls`.
ARG TLS=0
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 \
 && if [ "$TLS" = 1 ]; then apt-get install -y --no-install-recommends python3-bpfcc; fi \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# The source tree too: the hub serves spa/ from beside hub/ (python -m runs from /app).
WORKDIR /app
COPY shark shark
COPY hub hub
COPY worker worker
COPY spa spa
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The hub runs as this user; the workers' pods ask for root (only for NET_RAW/NET_ADMIN).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin shark
USER 10001
EXPOSE 8899 8897
CMD ["python", "-m", "hub", "--kube", "--listen", "0.0.0.0:8899"]
