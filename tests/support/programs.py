"""The TLS test programs of tests/support/tlsprograms/, built on demand and cached under
.cache/test-programs/ by a hash of their source, build flags and compiler: a clean clone
(CI) builds each once, later runs reuse it.

Go programs are built offline from Debian's packages: the standard library of golang-go,
and google.golang.org/grpc from golang-google-grpc-dev in GOPATH mode
(GOPATH=/usr/share/gocode, GO111MODULE=off). The C client links OpenSSL's static libraries
from libssl-dev.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.processes import ROOT

SOURCES = Path(__file__).resolve().parent / "tlsprograms"
CACHE = ROOT / ".cache" / "test-programs"
DEBIAN_GOPATH = "/usr/share/gocode"
STATIC_OPENSSL = ("/usr/lib/x86_64-linux-gnu/libssl.a", "/usr/lib/x86_64-linux-gnu/libcrypto.a")


class ProgramUnavailable(Exception):
    """A test program cannot be built here; the message says what is missing."""


def _tool_version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        raise ProgramUnavailable(f"{argv[0]} is not usable ({error}): ./dev installs it") from None


def _cached(name: str, key_parts: list[str], build: Callable[[Path], None]) -> Path:
    digest = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:16]
    target = CACHE / f"{name}-{digest}"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        build(partial)
        os.replace(partial, target)     # atomic: a parallel run sees all of it or nothing
    finally:
        partial.unlink(missing_ok=True)
    for older in CACHE.glob(f"{name}-*"):   # builds of earlier sources
        if len(older.name) == len(target.name) and older != target:
            older.unlink(missing_ok=True)
    return target


def _run_build(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env},
                          timeout=900, check=False)
    if done.returncode != 0:
        raise ProgramUnavailable(f"building {what} failed:\n{done.stderr[-3000:]}")


# Build variants: how release binaries come.
GO_VARIANTS = {
    "plain": ([], {}),
    # without symbol table and DWARF, as release images are
    "stripped": (["-ldflags=-s -w"], {}),
    # the system linker (as cgo programs are linked) and a position-independent executable,
    # as distributions build: the function table lands inside .data.rel.ro, no .gopclntab
    # section (cgo itself stays off: the standard library built for the others serves)
    "external-pie": (["-buildmode=pie", "-ldflags=-linkmode=external"], {}),
}


def go_program(name: str, variant: str = "plain") -> Path:
    """The Go program tlsprograms/NAME.go, built as one of GO_VARIANTS."""
    if shutil.which("go") is None:
        raise ProgramUnavailable("no Go toolchain (golang-go): ./dev installs it")
    source = SOURCES / f"{name}.go"
    if "google.golang.org/grpc" in source.read_text() and not os.path.isdir(
            f"{DEBIAN_GOPATH}/src/google.golang.org/grpc"):
        raise ProgramUnavailable("no gRPC for Go in /usr/share/gocode (golang-google-grpc-dev): "
                                 "./dev installs it")
    extra_flags, extra_env = GO_VARIANTS[variant]
    flags = ["-trimpath", *extra_flags]
    key = [source.read_text(), " ".join(flags), repr(sorted(extra_env.items())),
           _tool_version(["go", "version"])]

    def build(output: Path) -> None:
        env = {"GO111MODULE": "off", "GOPATH": DEBIAN_GOPATH, "GOFLAGS": "",
               "GOCACHE": str(ROOT / ".cache" / "go-build"), "CGO_ENABLED": "0", **extra_env}
        _run_build(["go", "build", *flags, "-o", str(output), str(source)], env, source.name)
    return _cached(name if variant == "plain" else f"{name}-{variant}", key, build)


def static_openssl_client() -> Path:
    """tlsprograms/openssl_static_client.c linked with libssl.a and libcrypto.a."""
    if shutil.which("gcc") is None:
        raise ProgramUnavailable("no C compiler (gcc): ./dev installs it")
    missing = [path for path in STATIC_OPENSSL if not os.path.exists(path)]
    if missing:
        raise ProgramUnavailable(f"no {', '.join(missing)} (libssl-dev): ./dev installs it")
    source = SOURCES / "openssl_static_client.c"
    key = [source.read_text(), _tool_version(["gcc", "--version"])]
    key += [f"{path}:{os.stat(path).st_mtime_ns}" for path in STATIC_OPENSSL]

    def build(output: Path) -> None:
        _run_build(["gcc", "-O1", "-o", str(output), str(source), *STATIC_OPENSSL,
                    "-lpthread", "-ldl"], {}, source.name)
    return _cached("openssl_static_client", key, build)


# -- binaries doctored the way real ones come ---------------------------------------------

def without_section_headers(binary: Path, target: Path) -> Path:
    """A copy of an ELF executable with its section headers removed (e_shoff, e_shnum and
    e_shstrndx zeroed, as sstrip and some packers leave binaries): it still runs."""
    shutil.copy(binary, target)
    with open(target, "r+b") as file:
        file.seek(0x28)                         # e_shoff (ELF64)
        file.write(struct.pack("<Q", 0))
        file.seek(0x3C)                         # e_shnum, e_shstrndx
        file.write(struct.pack("<HH", 0, 0))
    return target


def with_go_version(binary: Path, target: Path, version: str) -> Path:
    """A copy of a Go 1.18+ binary whose build info names another Go version of the same
    length (the runtime does not read it: the program runs as before)."""
    data = bytearray(binary.read_bytes())
    at = data.index(b"\xff Go buildinf:") + 32
    length = data[at]
    assert data[at + 1:at + 1 + length].startswith(b"go1.") and len(version) == length
    data[at + 1:at + 1 + length] = version.encode()
    target.write_bytes(bytes(data))
    target.chmod(0o755)
    return target
