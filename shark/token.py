"""The installation's shared secret token (ARCHITECTURE.md, "Security model").

One token per installation: a Secret in the cluster, a 0600 file in the local state dir, and
`SHARK_TOKEN` in the environment overriding both for the worker, the hub and the CLI alike.
The token also keys the hashes that redaction shows in place of a secret, so two requests that
carried the same credential show the same hash without showing the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ENV = "SHARK_TOKEN"
FILE_NAME = "token"        # in the local state dir
HASH_CHARS = 12            # hex digits of the keyed hash shown beside "[redacted]"


class TokenError(ValueError):
    """A token that cannot be used; the message says where it came from and why."""


def generate() -> str:
    """A fresh token: 256 random bits, URL-safe (it travels in a header and once in a URL)."""
    return secrets.token_urlsafe(32)


def check(token: str, where: str) -> str:
    """The token stripped, or TokenError naming `where` it came from."""
    token = token.strip()
    if not token:
        raise TokenError(f"{where}: the token is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenError(f"{where}: the token holds whitespace or control characters")
    return token


def from_env() -> str | None:
    """SHARK_TOKEN, when set and not empty."""
    value = os.environ.get(ENV)
    return check(value, ENV) if value else None


def read_file(path: Path) -> str:
    try:
        return check(path.read_text(encoding="utf-8"), str(path))
    except OSError as error:
        raise TokenError(f"{path}: cannot read the token: {error.strerror or error}") from None


def load_or_create(path: Path) -> str:
    """The token in `path`, created (mode 0600, its directory 0700) when missing."""
    if path.exists():
        return read_file(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = generate()
        # O_EXCL: two taps started at once must not write two different tokens.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_file(path)
    except OSError as error:
        raise TokenError(f"{path}: cannot create the token: {error.strerror or error}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


def keyed_hash(key: str, value: str | bytes) -> str:
    """A short HMAC-SHA256 of `value` under the installation's token."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()[:HASH_CHARS]


def session_value(token: str) -> str:
    """What a browser's session cookie holds: derived from the token (a full HMAC), so the
    cookie jar never holds the token itself, and a new token ends every old session."""
    return hmac.new(token.encode("utf-8"), b"kubectl-shark browser session v1", hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the installation's."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))
