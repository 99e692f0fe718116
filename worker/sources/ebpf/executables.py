"""What in an executable the TLS probes can hook: Go's crypto/tls (gobinary.py), and OpenSSL
linked statically (SSL_read/SSL_write in the executable's own symbol table; a process that
maps a shared libssl is hooked there, libraries.py).

inspect_executable() opens the file once and answers; most executables of a node are
neither (a few byte searches tell), and are then forgotten by inode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from worker.sources.ebpf.elfimage import ElfImage, ElfImageError
from worker.sources.ebpf.gobinary import GoBinaryError, GoTls, go_version, inspect_go, is_go

log = logging.getLogger("shark.worker.ebpf")

OPENSSL_REQUIRED = {"SSL_write", "SSL_read"}
OPENSSL_FUNCTIONS = OPENSSL_REQUIRED | {"SSL_write_ex", "SSL_read_ex"}


class ExecutableError(Exception):
    """The executable runs TLS code the probes cannot hook; the message says what is missing."""

    def __init__(self, message: str, version: str = "") -> None:
        super().__init__(message)
        self.version = version


@dataclass(slots=True)
class TlsCode:
    """The TLS code of one executable: Go's crypto/tls, a static OpenSSL, or both."""
    go: GoTls | None = None
    openssl: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        kinds = (["go"] if self.go else []) + (["openssl-static"] if self.openssl else [])
        return "+".join(kinds)


def inspect_executable(path: str) -> TlsCode | None:
    """The TLS code in the executable at `path`: None when there is none to hook (or the
    file cannot be read: it is logged); ExecutableError, naming what is missing, when
    there is some that cannot be hooked."""
    try:
        image = ElfImage(path)
    except (OSError, ElfImageError) as error:
        log.debug("ebpf: not inspecting %s: %s", path, error)
        return None
    with image:
        code = TlsCode()
        if image.defined_functions(OPENSSL_REQUIRED) == OPENSSL_REQUIRED:
            code.openssl = True
        if is_go(image):
            try:
                code.go = inspect_go(image)
            except GoBinaryError as error:
                if not code.openssl:
                    raise ExecutableError(str(error), go_version(image)) from None
                code.notes.append(f"Go crypto/tls not hooked: {error}")
            except (ElfImageError, ValueError, IndexError) as error:   # a damaged binary
                if not code.openssl:
                    raise ExecutableError(f"Go binary that cannot be read: {error}",
                                          go_version(image)) from None
                code.notes.append(f"Go crypto/tls not hooked: {error}")
            if code.go is not None:
                code.notes += code.go.notes
        return code if code.go is not None or code.openssl else None

