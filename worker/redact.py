"""Credentials in captured traffic shown as `[redacted:HASH]` (ARCHITECTURE.md, Security model).

Applied at the worker to every entry before it is indexed or streamed, and to the bodies the
detail view dissects again from the pcap, so the index, /entries, /stream, the detail, the
hub's HAR, scripts and the UI never see the value. HASH is a short HMAC-SHA256 of the value
keyed with the installation's token (shark.token.keyed_hash): the same credential shows the
same hash, without the hash telling the credential to anyone who lacks the token. The stored
pcap keeps the raw bytes (docs/OPERATIONS.md).

Cheap on the hot path: an entry costs a look at its header names and query keys; strings are
searched only when they can hold a secret (an HTTP summary whose query held one, '@' in a host,
SQL that says password, a JSON or form body in the detail view).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus

from shark.model import Body, Entry
from shark.token import keyed_hash, load_or_create
from worker.dissectors.redis import SECRET_COMMANDS, secret_arguments
from worker.redact_scan import may_hold_field

DEFAULT_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                   "x-auth-token")
DEFAULT_FIELDS = ("password", "passwd", "secret", "token", "access_token", "api_key", "apikey")
PREFIX = "[redacted:"
KEY_FILE = "redaction.key"
MARK_CACHE = 4096

# Authorization-like headers keep their scheme ("Bearer [redacted:…]"): which kind of
# credential was sent is useful and not secret.
_SCHEMED = frozenset({"authorization", "proxy-authorization"})
# Protocols whose summary is a request line and whose header names are lower case.
_HTTP = frozenset({"http", "http2", "grpc"})
# Headers that carry a URL, whose query (or fragment: OAuth's #access_token=) can hold a secret.
_URL_HEADERS = frozenset({"location", "referer", "content-location", "origin"})
# Kubernetes' WebSocket clients send the bearer token as a subprotocol (browsers cannot set
# Authorization on a WebSocket): base64url.bearer.authorization.k8s.io.TOKEN
_K8S_BEARER = "base64url.bearer.authorization.k8s.io."
# SQL that sets a password: PostgreSQL's [ENCRYPTED] PASSWORD 'x', MySQL's IDENTIFIED [WITH
# plugin] BY 'x', SET PASSWORD [FOR u] = [PASSWORD]('x'); also WHERE password = 'x'.
_SQL = frozenset({"postgres", "mysql"})
_SQL_HINT = re.compile(r"password|identified", re.I)


def _sql_hint(query: str) -> bool:
    """Whether _SQL_HINT finds a word in the query (for every SQL entry). Its case-insensitive
    search took ~3 µs per entry; for ASCII text (most SQL) lower() and two substring tests
    find the same words: re.I's other foldings ('ſ' for 's', 'ı' for 'i') are not ASCII."""
    if query.isascii():
        lower = query.lower()
        return "password" in lower or "identified" in lower
    return _SQL_HINT.search(query) is not None


_SQL_SECRET = re.compile(
    r"(?P<lead>\b(?:password|identified(?:\s+with\s+\S+)?\s+by)\s*(?:=\s*)?(?:password\s*)?\(?\s*)"
    r"'(?P<value>(?:[^'\\]|\\.|'')*)'?", re.I)
# Protocols whose entries hold nothing Redactor.entry reads: no request or response field named
# headers, trailers, query, host, authority or text, and a summary that is not HTTP's, Redis's
# or SQL's. entry() leaves theirs as they are, so the dissection does not call it for them
# (per entry it cost about as much as encoding the entry). A protocol whose fields gain one
# of those names must leave this set (tests/unit/test_redact.py checks its golden entries).
# DNS's request and response are dict literals of fixed keys (dns.py, _request and _response);
# Kafka's hold the header's and the parsed body's fixed names (api, topics, acks, error, ...).
UNTOUCHED = frozenset({"mqtt", "dns", "kafka"})
# The keys of a request or response Redactor._message reads (tests/unit/test_redact.py checks
# that it reads no other).
MESSAGE_KEYS = frozenset({"headers", "trailers", "query", "host", "authority", "text"})
# Those but "text": a side holding none of them is left as it is unless its text may hold a
# field (worker.redact_scan.message_left_alone).
NOT_TEXT_KEYS = MESSAGE_KEYS - {"text"}
# Protocols whose summary or fields entry() reads beyond what _message reads (the request line,
# a Redis command, SQL). For every other protocol entry() changes only what _message changes,
# so the dissection calls it only when redact_scan.message_left_alone says it could change a
# side (for most entries it cannot: a WebSocket message without a field name in quotes).
SUMMARY_READ = _HTTP | {"redis"} | _SQL
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#@\s]+)@")


class Summary(Protocol):
    """What Redactor.entry reads and changes: an Entry, or one in the making
    (worker.dissection.IndexedEntry)."""

    protocol: str
    summary: str
    request: dict[str, Any]
    response: dict[str, Any] | None


class Redactor:
    def __init__(self, key: str, headers: Iterable[str] = (), fields: Iterable[str] = ()) -> None:
        self._key = key
        self._marks: dict[str, str] = {}
        self.headers = tuple(dict.fromkeys([*DEFAULT_HEADERS, *(h.strip().lower() for h in headers)]))
        self.fields = tuple(dict.fromkeys([*DEFAULT_FIELDS, *(f.strip().lower() for f in fields)]))
        self._header_set = frozenset(self.headers)
        # every header name looked at: the secret ones, and those that may hold one inside
        self._watched = self._header_set | _URL_HEADERS | {"sec-websocket-protocol"}
        self._field_set = frozenset(self.fields)
        names = "|".join(re.escape(f) for f in sorted(self.fields, key=len, reverse=True))
        # name=value in a query string or a form body; the value up to the next separator.
        self._pair = re.compile(rf"(?P<lead>^|[?&;#])(?P<name>{names})=(?P<value>[^&;#\s]*)", re.I)
        # "name": value in JSON text, found in place so formatting stays and a truncated body
        # is still redacted (an unterminated string runs to the end).
        self._json = re.compile(
            rf'"(?P<name>{names})"(?P<sep>\s*:\s*)(?P<value>"(?:[^"\\]|\\.)*"?|[^\s,{{}}\[\]][^\s,}}\]]*)', re.I)
        # What _json needs in a text before it can match: one of the names in quotes
        # (redact_scan.may_hold_field; None: a name is not ASCII, every text is searched). The
        # regex's search per WebSocket text message was ~a sixth of that protocol's dissection.
        self.quoted_names = tuple(f'"{name}"' for name in self.fields) \
            if all(name.isascii() for name in self.fields) else None

    def describe(self) -> dict[str, Any]:
        """What /status says about the mode."""
        return {"enabled": True, "headers": list(self.headers), "fields": list(self.fields)}

    def mark(self, value: str) -> str:
        # The same credential comes back on every request of a client: remember its mark.
        marked = self._marks.get(value)
        if marked is None:
            if len(self._marks) >= MARK_CACHE:
                self._marks.clear()
            marked = self._marks[value] = f"{PREFIX}{keyed_hash(self._key, value)}]"
        return marked

    # -- entries (summary fields; every protocol) ---------------------------------------------

    def entry(self, entry: Summary) -> None:
        """Redact `entry` in place."""
        # Each field read once (interpreted, per entry: every attribute read counts).
        protocol = entry.protocol
        http = protocol in _HTTP
        in_query = False
        # A side without any key _message reads is left as it is: one C-level look at its
        # keys instead of six lookups (most entries: DNS, Redis, SQL, AMQP).
        request, response = entry.request, entry.response
        if request and not MESSAGE_KEYS.isdisjoint(request):
            in_query = self._message(request, http)
        if response and not MESSAGE_KEYS.isdisjoint(response):
            in_query |= self._message(response, http)
        if http:
            # An HTTP summary is the request line: its query is request.query's, so it needs a
            # look only when that held a secret (or the target names a user).
            summary = entry.summary
            if in_query or "@" in summary:
                entry.summary = self.url_text(summary)
        elif protocol == "redis":
            # Only a command that can hold a credential is looked into (most hold none).
            command = request.get("command") if request else None
            if isinstance(command, str) and command in SECRET_COMMANDS:
                self._redis(entry)
        elif protocol in _SQL:
            query = request.get("query")
            if isinstance(query, str) and _sql_hint(query):
                request["query"] = self.sql(query)
                entry.summary = self.sql(entry.summary)

    def sql(self, text: str) -> str:
        """SQL with the password literals it sets (or compares) hashed."""
        return _SQL_SECRET.sub(lambda m: f"{m['lead']}'{self.mark(m['value'])}'", text)

    def _redis(self, entry: Summary) -> None:
        """AUTH / HELLO AUTH / MIGRATE AUTH / CONFIG SET requirepass arguments, and the summary
        (the command and its first argument) when that is one of them."""
        command, args = entry.request.get("command"), entry.request.get("arguments")
        if not isinstance(command, str) or not isinstance(args, list) or not args:
            return
        secret = secret_arguments(command, args)
        if not secret:
            return
        first = args[0]
        for i in secret:
            args[i] = self.mark(str(args[i]))
        if 0 in secret and entry.summary == f"{command} {first}"[:256]:
            entry.summary = f"{command} {args[0]}"

    def _message(self, message: dict[str, Any], http: bool) -> bool:
        """Redact one side; True when its query held a secret. (Written flat: it runs for
        every entry, and most have nothing to redact.)"""
        get = message.get
        headers = get("headers")
        if headers and isinstance(headers, dict):
            self._headers(headers, http)
        trailers = get("trailers")
        if trailers and isinstance(trailers, dict):
            self._headers(trailers, http)
        found = False
        query = get("query")
        if query and isinstance(query, dict):
            for name, values in query.items():
                if name.lower() in self._field_set:
                    found = True
                    query[name] = ([self.mark(str(v)) for v in values] if isinstance(values, list)
                                   else self.mark(str(values)))
        host = get("host") or get("authority")
        if host and isinstance(host, str) and "@" in host:
            key = "host" if get("host") else "authority"
            name, _, rest = host.rpartition("@")
            message[key] = f"{self.mark(name)}@{rest}"
        # A WebSocket text message is often JSON that logs in: {"type": "auth", "token": ...}
        text = get("text")
        if text and isinstance(text, str) and '"' in text and self._may_hold_field(text):
            message["text"] = self._json.sub(self._json_value, text)
        return found

    def _may_hold_field(self, text: str) -> bool:
        """False only when _json cannot match in `text` (no field name in quotes)."""
        return may_hold_field(text, self.quoted_names)

    def _headers(self, headers: dict[str, Any], lower_case: bool) -> None:
        watched = self._watched
        # HTTP dissectors give header names in lower case: one set intersection finds them all
        # (and usually finds none).
        names = headers.keys() & watched if lower_case else [n for n in headers if n.lower() in watched]
        for name in names:
            lower = name.lower()
            value = headers[name]
            text = value if isinstance(value, str) else str(value)
            if lower not in self._header_set:       # a header that may hold a secret inside
                if lower in _URL_HEADERS and ("?" in text or "#" in text or "@" in text):
                    headers[name] = self.url_text(text)
                elif lower == "sec-websocket-protocol" and _K8S_BEARER in text:
                    headers[name] = ", ".join(
                        f"{_K8S_BEARER}{self.mark(p.strip()[len(_K8S_BEARER):])}"
                        if p.strip().startswith(_K8S_BEARER) else p.strip() for p in text.split(","))
            elif lower == "cookie":
                headers[name] = self._cookies(text, "; ")
            elif lower == "set-cookie":
                headers[name] = "\n".join(self._set_cookie(line) for line in text.split("\n"))
            elif lower in _SCHEMED and " " in text.strip():
                scheme, _, credentials = text.strip().partition(" ")
                headers[name] = f"{scheme} {self.mark(credentials.strip())}"
            else:
                headers[name] = self.mark(text)

    def _cookies(self, text: str, joiner: str) -> str:
        """`a=1; b=2` -> `a=[redacted:…]; b=[redacted:…]`: the names stay, each value is hashed."""
        out = []
        for part in text.split(";"):
            name, eq, value = part.strip().partition("=")
            out.append(f"{name}={self.mark(value)}" if eq else self.mark(name) if name else "")
        return joiner.join(p for p in out if p)

    def _set_cookie(self, line: str) -> str:
        """The cookie's value hashed, its attributes (Path, Expires, HttpOnly, …) kept."""
        first, sep, attributes = line.partition(";")
        return self._cookies(first, "") + sep + attributes

    def url_text(self, text: str) -> str:
        """A request line or URL with its secret query parameters and user:password@ hashed."""
        if "@" in text:
            text = _USERINFO.sub(lambda m: f"{m['scheme']}{self.mark(unquote(m['info']))}@", text)
        if "?" in text or "#" in text:
            cut = min(i for i in (text.find("?"), text.find("#")) if i >= 0)
            text = text[:cut] + self._pairs(text[cut:], unquote)
        return text

    def _pairs(self, text: str, unquoting: Callable[[str], str]) -> str:
        return self._pair.sub(
            lambda m: f"{m['lead']}{m['name']}={self.mark(unquoting(m['value']))}", text)

    # -- bodies (detail view) -------------------------------------------------------------------

    def body_text(self, text: str, content_type: str) -> str:
        """JSON and form-urlencoded bodies with their secret fields hashed; others as they are."""
        content_type = content_type.lower()
        if "x-www-form-urlencoded" in content_type:
            return self._pairs(text, unquote_plus)
        if "json" in content_type or text.lstrip()[:1] in ("{", "["):
            return self._json.sub(self._json_value, text)
        return text

    def _json_value(self, match: re.Match[str]) -> str:
        value = match["value"]
        if value.startswith('"'):
            value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return f'"{match["name"]}"{match["sep"]}"{self.mark(value)}"'

    def detail(self, entry: Entry) -> None:
        """The bodies a detail view adds to an (already redacted) stored entry."""
        for message in (entry.request, entry.response):
            body = message.get("body") if message else None
            if isinstance(body, Body) and body.encoding == "text" and body.data:
                body.data = self.body_text(body.data, str(message.get("content_type") or ""))  # type: ignore[union-attr]


def describe_off() -> dict[str, Any]:
    return {"enabled": False, "headers": [], "fields": []}


def key_for(token: str | None, storage_dir: Path) -> str:
    """The hash key: the installation's token, or without one (a loopback-only worker) a key
    kept in the store (0600), so hashes stay the same across restarts on that store."""
    return token if token else load_or_create(storage_dir / KEY_FILE)
