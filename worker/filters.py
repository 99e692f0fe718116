"""The worker's simple field filter for /entries, /stream and /pcap (until KFL lands).

Query parameters, all optional and combined with AND: protocol, method, path (prefix), status
(500, 5xx), host, ip and port (either end), node, complete (true|false). Unknown parameters
are refused by the API with 400 naming them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shark.model import Entry, decode_entry
from worker.store.index import IndexRow

FILTER_FIELDS = ("protocol", "method", "path", "status", "host", "ip", "port", "complete")


class FilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _status_test(text: str) -> Callable[[int | None], bool]:
    if len(text) == 3 and text[0] in "12345" and text[1:].lower() == "xx":
        klass = int(text[0])
        return lambda status: status is not None and status // 100 == klass
    try:
        wanted = int(text)
    except ValueError:
        raise FilterError("status", f"{text!r} is not a status; expected e.g. 500 or 5xx") from None
    return lambda status: status == wanted


def compile_filter(params: Mapping[str, str]) -> Callable[[Entry], bool] | None:
    """A predicate over entries, or None when no filter is given (everything matches)."""
    tests: list[Callable[[Entry], bool]] = []
    if protocol := params.get("protocol"):
        tests.append(lambda e: e.protocol == protocol)
    if method := params.get("method"):
        upper = method.upper()
        tests.append(lambda e: e.request.get("method") == upper)
    if path := params.get("path"):
        tests.append(lambda e: str(e.request.get("path", "")).startswith(path))
    if (status := params.get("status")) is not None and status != "":
        status_ok = _status_test(status)
        tests.append(lambda e: status_ok(e.status))
    if host := params.get("host"):
        tests.append(lambda e: e.request.get("host") == host)
    if ip := params.get("ip"):
        tests.append(lambda e: ip in (e.src.ip, e.dst.ip))
    if (port_text := params.get("port")) is not None and port_text != "":
        try:
            port = int(port_text)
        except ValueError:
            raise FilterError("port", f"{port_text!r} is not a port number") from None
        tests.append(lambda e: port in (e.src.port, e.dst.port))
    if (complete := params.get("complete")) is not None and complete != "":
        if complete not in ("true", "false"):
            raise FilterError("complete", f"{complete!r}: expected true or false")
        wanted = complete == "true"
        tests.append(lambda e: e.complete is wanted)
    if not tests:
        return None
    return lambda entry: all(test(entry) for test in tests)


def row_predicate(entry_test: Callable[[Entry], bool] | None) -> Callable[[IndexRow], bool]:
    if entry_test is None:
        return lambda row: True
    return lambda row: entry_test(decode_entry(row.entry_json))
