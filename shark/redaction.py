"""What `tap` tells its workers about redaction (the worker's --no-redact, --redact-header,
--redact-field; worker/redact.py does the redacting)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Redaction:
    enabled: bool = True
    headers: tuple[str, ...] = ()     # header names besides the worker's defaults
    fields: tuple[str, ...] = ()      # query / body field names besides the defaults

    def check(self) -> None:
        """ValueError naming the option of a name that cannot be one."""
        for option, names in (("--redact-header", self.headers), ("--redact-field", self.fields)):
            for name in names:
                if not name or any(ch.isspace() or not ch.isprintable() for ch in name):
                    raise ValueError(f"{option}: {name!r} is not a name")

    def worker_args(self) -> list[str]:
        if not self.enabled:
            return ["--no-redact"]
        return [*(a for n in self.headers for a in ("--redact-header", n)),
                *(a for n in self.fields for a in ("--redact-field", n))]
