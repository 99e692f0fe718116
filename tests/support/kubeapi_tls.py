"""The serving certificate of the Kubernetes API double (tests/support/kubeapi.py), made with openssl.

As a cluster's API server: a CA (what a kubeconfig's certificate-authority-data and a pod's
service-account ca.crt hold) signs the server's certificate, whose subjectAltNames are the
addresses clients reach it by (127.0.0.1, localhost, kubernetes.default.svc). Clients verify
it; kubectl sends bearer tokens only over TLS, so authentication needs it. One CA and
certificate per test process (EC keys: a few milliseconds), in a private temporary directory.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

SANS = "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"


@dataclass(frozen=True)
class Certificates:
    ca: Path            # PEM: the cluster's CA
    cert: Path          # PEM: the API server's certificate, signed by the CA
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["http/1.1"])     # no HTTP/2 here: clients fall back, as to a proxy
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


_lock = threading.Lock()
_made: Certificates | None = None


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def certificates() -> Certificates:
    global _made
    with _lock:
        if _made is None:
            folder = Path(tempfile.mkdtemp(prefix="kubeapi-tls-"))
            atexit.register(shutil.rmtree, folder, True)
            ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=kubernetes-ca",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                     "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))
            _openssl("req", "-new", *ec, "-subj", "/CN=kube-apiserver", "-keyout", str(folder / "server.key"),
                     "-out", str(folder / "server.csr"))
            (folder / "server.ext").write_text(f"subjectAltName={SANS}\nextendedKeyUsage=serverAuth\n"
                                               "basicConstraints=CA:FALSE\n")
            _openssl("x509", "-req", "-in", str(folder / "server.csr"), "-CA", str(folder / "ca.crt"),
                     "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
                     "-extfile", str(folder / "server.ext"), "-out", str(folder / "server.crt"))
            _made = Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key")
        return _made
