"""KFL: the documented examples, the semantics (null, types, regex, in, helpers), errors with
columns, and hypothesis fuzzing of the parser and of evaluation."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import API, FRONTEND, tentry_json
from shark import kfl
from shark.kfl import KflError
from support.processes import ROOT

DOC = (ROOT / "docs" / "KFL.md").read_text()


def entry(name: str, protocol: str, **fields: Any) -> dict[str, Any]:
    """A sample entry as the worker's index holds it: an Entry encoded and decoded."""
    made = {"id": f"n:{name}", "node": "node-a", "protocol": protocol, "summary": name,
            "src": FRONTEND, "dst": API, "request": {}, "response": None, "status": None}
    return tentry_json(**{**made, **fields})


SAMPLES: dict[str, dict[str, Any]] = {
    "get_users": entry(
        "get_users", "http", summary="GET /api/v2/users", status=200, elapsed_ms=12.5,
        request={"method": "GET", "path": "/api/v2/users", "query": {"page": ["2"]},
                 "version": "HTTP/1.1", "host": "api",
                 "headers": {"content-type": "application/json", "user-agent": "curl/8.0",
                             "authorization": "Bearer abc"},
                 "content_type": "application/json", "content_length": 0},
        response={"status": 200, "reason": "OK", "headers": {}}, tags=["admin"],
        size={"request": 120, "response": 2_000_000}),
    "post_fail": entry(
        "post_fail", "http", summary="POST /api/orders", status=500, elapsed_ms=1500.0,
        request={"method": "POST", "path": "/api/orders", "headers": {"content-type": "text/plain"},
                 "content_type": "text/plain"},
        response={"status": 500, "reason": "Internal Server Error", "error": None},
        tags=["test.fail", "admin"],
        dst={"ip": "10.0.0.7", "port": 80, "name": "orders", "namespace": "kube-system", "kind": "pod"}),
    "cut": entry("cut", "http", summary="GET /health", request={"method": "GET", "path": "/health"},
                 response=None, complete=False, notes=["gap in response"]),
    "dns_ok": entry("dns_ok", "dns", summary="A example.com", status=0,
                    request={"qname": "example.com", "qtype": "A"},
                    response={"rcode": "NOERROR", "error": None}),
    "dns_nx": entry("dns_nx", "dns", summary="A nope.example", status=3,
                    request={"qname": "nope.example", "qtype": "A"},
                    response={"rcode": "NXDOMAIN", "error": "NXDOMAIN"}),
    "redis_get": entry("redis_get", "redis", summary="GET user:42",
                       request={"command": "GET", "key": "user:42"}, response={"error": None},
                       dst={"ip": "10.0.0.3", "port": 6379, "name": "cache", "namespace": "shop",
                            "kind": "pod"}),
    "redis_err": entry("redis_err", "redis", summary="SET",
                       request={"command": "SET"}, response={"error": "ERR wrong number"}),
    "pg_err": entry("pg_err", "postgres", summary="SELECT * FROM nope",
                    request={"query": "SELECT * FROM nope"},
                    response={"error": {"severity": "ERROR", "code": "42P01",
                                        "message": "relation does not exist"}}),
    "tls_hello": entry("tls_hello", "tls", summary="example.com", request={"sni": "example.com"}),
    "ebpf_http": entry("ebpf_http", "http2", summary="GET /api/x", tls=True, status=200,
                       request={"method": "GET", "path": "/api/x"}, response={"status": 200}),
    "grpc_fail": entry("grpc_fail", "grpc", summary="/shop.Cart/Add", status=14,
                       request={"path": "/shop.Cart/Add"}, response={"status": 14}),
    "tcp_flow": entry("tcp_flow", "tcp", summary="tcp 10 B", size={"request": 10, "response": 0}),
}

# Documented queries and the samples each must match: docs and behaviour stay together.
EXPECTED: dict[str, set[str]] = {
    "http and response.status == 500": {"post_fail"},
    "dns": {"dns_ok", "dns_nx"},
    'redis and request.command == "GET"': {"redis_get"},
    'src.name == "frontend"': set(SAMPLES),
    'dst.namespace != "kube-system"': set(SAMPLES) - {"post_fail"},
    'request.path.startsWith("/api")': {"get_users", "post_fail", "ebpf_http"},
    'request.headers["content-type"].contains("json")': {"get_users"},
    'request.path == r"/v[0-9]+/.*"': set(),
    "elapsed_ms > 100": {"post_fail"},
    "not tls": set(SAMPLES) - {"tls_hello", "ebpf_http"},
    'request.headers["user-agent"].contains("curl")': {"get_users"},
    'request.query["page"][0] == "2"': {"get_users"},
    'tags[0] == "test.pass"': set(),
    "size.response > 1000000": {"get_users"},
    "http2 or grpc": {"ebpf_http", "grpc_fail"},
    "not complete": {"cut"},
    "postgres and response.error": {"pg_err"},
    "notes and not complete": {"cut"},
    'protocol in ["http", "http2", "grpc"]': {"get_users", "post_fail", "cut", "ebpf_http", "grpc_fail"},
    "(http or http2) and status >= 500": {"post_fail"},
    'http && !(request.method == "GET" || request.method == "HEAD")': {"post_fail"},
    "not (dns and status == 0)": set(SAMPLES) - {"dns_ok"},
    "status >= 400 and status < 500": set(),
    "response.error != null": {"redis_err", "pg_err", "dns_nx"},
    "response == null": {"cut", "tls_hello", "tcp_flow"},
    "elapsed_ms == null": set(SAMPLES) - {"get_users", "post_fail"},
    "response.status != 200": {"post_fail", "grpc_fail"},
    'status == "500"': set(),
    "tags == []": set(SAMPLES) - {"get_users", "post_fail"},
    'request.method in ["GET", "HEAD"]': {"get_users", "cut", "ebpf_http"},
    '"admin" in tags': {"get_users", "post_fail"},
    "status in [500, 502, 503, 504]": {"post_fail"},
    '"authorization" in request.headers': {"get_users"},
    '"json" in request.content_type': {"get_users"},
    'request.path.startsWith("/api/")': {"get_users", "post_fail", "ebpf_http"},
    'request.path.endsWith(".png")': set(),
    'summary.contains("orders")': {"post_fail"},
    'request.method.lower() == "post"': {"post_fail"},
    'request.headers["content-type"].lower().startsWith("application/json")': {"get_users"},
    'tags.contains("test.fail")': {"post_fail"},
    "tags.len() > 1": {"post_fail"},
    'request.path.matches(r"/users/[0-9]+$")': set(),
    'request.path == r"/api/v[0-9]+/.*"': {"get_users"},
    'request.path.matches(r"v[0-9]+")': {"get_users"},
    'request.path.startsWith(r"/api/v[0-9]")': {"get_users"},
    'request.path.endsWith(r"/(users|orders)")': {"get_users", "post_fail"},
    'request.headers["authorization"].matches(r"(?i)^bearer ")': {"get_users"},
    'summary != r"GET /health.*"': set(SAMPLES) - {"cut"},
    "http and response.status >= 500 and elapsed_ms > 1000": {"post_fail"},
    'http and request.method == "POST" and not request.path.startsWith("/health")': {"post_fail"},
    "dns and status != 0": {"dns_nx"},
    "redis and response.error != null": {"redis_err"},
    "postgres and response.error != null": {"pg_err"},
    'http2 and request.path.startsWith("/api")': {"ebpf_http"},
    "grpc and status != 0": {"grpc_fail"},
    'src.namespace == "shop" and dst.namespace != "shop"': {"post_fail"},
    "dst.port == 6379 and not redis": set(),
    "(tcp or udp) and size.request > 0": {"tcp_flow"},
}


def doc_blocks(kind: str) -> list[str]:
    blocks = re.findall(rf"```{kind}\n(.*?)```", DOC, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def matching(query: str) -> set[str]:
    compiled = kfl.compile(query)
    return {name for name, sample in SAMPLES.items() if compiled.test(sample)}


# -- the documentation -------------------------------------------------------------------------
def test_every_documented_query_compiles() -> None:
    queries = doc_blocks("kfl")
    assert len(queries) >= 60
    for query in queries:
        assert kfl.validate(query) is None, (query, kfl.validate(query))


def test_documented_queries_match_the_samples() -> None:
    documented = set(doc_blocks("kfl"))
    for query, expected in EXPECTED.items():
        assert query in documented, f"not in docs/KFL.md: {query}"
        assert matching(query) == expected, query
    assert len(EXPECTED) >= 50


def test_documented_invalid_queries_fail() -> None:
    invalid = doc_blocks("kfl-invalid")
    assert len(invalid) >= 10
    for query in invalid:
        assert kfl.validate(query) is not None, query


def test_documented_error_messages() -> None:
    section = DOC.split("## Errors")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(.+?)` \| `(.+?)`", section, re.M)
    assert len(rows) >= 6
    for query, message in rows:
        error = kfl.validate(query)
        assert error is not None, query
        assert str(error).startswith(message.removesuffix("; ...").removesuffix(" ...")), (query, str(error))


def test_docs_link_every_protocol_fields_page() -> None:
    section = DOC.split("## Fields by protocol")[1]
    for protocol in kfl.PROTOCOLS:
        if protocol in ("http", "udp"):   # http: in KFL.md itself; udp: with tcp
            continue
        assert f"(fields/{protocol}.md)" in section, protocol
    for page in sorted((ROOT / "docs" / "fields").glob("*.md")):
        assert f"(fields/{page.name})" in section, f"docs/KFL.md does not link {page.name}"


def fields_doc_queries() -> list[tuple[str, str]]:
    queries = []
    for page in sorted((ROOT / "docs" / "fields").glob("*.md")):
        text = page.read_text()
        if "## KFL" not in text:
            continue
        section = text.split("## KFL", 1)[1]
        for block in re.findall(r"```[a-z]*\n(.*?)```", section, re.S):
            queries += [(page.name, line) for line in block.splitlines() if line.strip()]
    return queries


def test_fields_docs_examples_compile() -> None:
    for page, query in fields_doc_queries():
        assert kfl.validate(query) is None, (page, query, str(kfl.validate(query)))


# -- semantics ---------------------------------------------------------------------------------
def test_empty_query_matches_everything() -> None:
    for text in ("", "   ", "\n\t"):
        query = kfl.compile(text)
        assert query.matches_all and all(query(s) for s in SAMPLES.values())


def test_null_and_type_rules() -> None:
    e = {"status": 200, "response": None, "request": {"n": 1, "s": "1", "b": True, "f": 1.0}}
    def ok(q: str) -> bool:
        return kfl.compile(q).test(e)
    assert ok("response == null") and not ok("response != null")
    assert ok("response.status == null") and not ok("response.status != 200")
    assert not ok("response.status < 1") and not ok("response.status >= 1")
    assert not ok('request.n == "1"') and not ok('request.n != "1"')
    assert ok("request.n == 1.0") and ok("request.f == 1") and ok("request.n <= request.f")
    assert not ok("request.b == 1") and ok("request.b == true") and not ok("request.b != true")
    assert ok("request.b != false") and not ok("request.n == true")
    assert not ok('request.s > 0') and ok('request.s > "0"')
    assert ok("null == null") and not ok("null != null") and not ok("null < 1")
    assert not ok("request.missing == request.other")  # null against null without the literal
    assert ok("not (response.status == 200)")
    assert ok("request.n") and not ok("request.missing") and ok("status")
    assert ok("request.s.len() == 1") and ok("request.n.len() == null")
    assert not ok('request.n.startsWith("1")') and not ok("request.n.lower()")


def test_regex_semantics() -> None:
    e = {"summary": "GET /api/v2/users?page=1", "request": {"path": "/api/v2/users"}}
    def ok(q: str) -> bool:
        return kfl.compile(q).test(e)
    assert ok('request.path == r"/api/v[0-9]+/users"') and not ok('request.path == r"v[0-9]+"')
    assert ok('request.path != r"v[0-9]+"') and not ok('request.path != r"/api/.*"')
    assert ok('r"/api/.*" == request.path')
    assert ok('request.path.matches(r"v[0-9]+")') and ok('request.path.matches("v[0-9]+")')
    assert ok('request.path.contains(r"v\\d")') and not ok('request.path.contains("v\\\\d")')
    assert ok('request.path.startsWith(r"/a.i")') and not ok('request.path.startsWith(r"api")')
    assert ok('request.path.endsWith(r"(users|orders)")') and not ok('request.path.endsWith(r"api")')
    assert ok('request.path.endsWith(r"(?i)USERS")') and not ok('request.path.endsWith(r"USERS")')
    assert ok('r"users" in request.path') and ok('request.path in [r"/api/.*", "x"]')
    assert not ok('status == r".*"') and not ok('request.missing != r".*"')
    assert ok('summary == r"GET /api/v2/users\\?page=1"')
    assert ok("summary == r'GET /api/v2/users\\?page=\\d'")
    assert not ok('summary == r"[[a]"')   # valid, though re warns "possible nested set"


def test_in_and_helpers() -> None:
    e = {"tags": ["a", "b", 1], "request": {"headers": {"x-id": "7"}, "method": "GET"}}
    def ok(q: str) -> bool:
        return kfl.compile(q).test(e)
    assert ok('"a" in tags') and ok("1 in tags") and not ok("true in tags") and not ok('"c" in tags')
    assert ok('"x-id" in request.headers') and not ok('"7" in request.headers')
    assert ok('"E" in request.method') and not ok("1 in request.method") and not ok('"a" in status')
    assert ok('request.method in ["PUT", "GET"]') and not ok('request.method in []')
    assert ok('request.method in [tags[0], "GET"]')
    assert ok('tags.contains("b")') and ok('request.headers.contains("x-id")')
    assert ok('request.method.upper().lower() == "get"') and ok("tags.len() == 3")
    assert ok('request.headers["x-id"] == "7"') and ok("tags[-1] == 1") and ok("tags[5] == null")
    assert ok('request.method.startsWith(request.method)')


def test_precedence_and_operators() -> None:
    e = {"protocol": "http", "status": 500, "complete": False}
    def ok(q: str) -> bool:
        return kfl.compile(q).test(e)
    assert ok("dns or http and status == 500")            # and binds tighter than or
    assert not ok("(dns or http) and status == 404")
    assert ok("not dns and http") and ok("!dns && http") and ok("dns || !complete")
    assert not ok("not http == true") and ok("!(http and complete)")
    assert ok("not not http") and ok("(((http)))")
    assert ok("(status == 500) == true") and ok("http == true") and not ok("dns == true")
    with pytest.raises(KflError, match="column 15"):
        kfl.compile("status == 500 == false")   # comparisons do not chain


def test_tls_means_both_kinds_of_tls() -> None:
    assert matching("tls") == {"tls_hello", "ebpf_http"}
    assert matching('protocol == "tls"') == {"tls_hello"}
    assert matching("tls == true") == {"ebpf_http"}


def test_literals() -> None:
    e = {"summary": 'say "hi"\n\t\\ it\'s é', "ts": 1e6, "elapsed_ms": -1.5}
    def ok(q: str) -> bool:
        return kfl.compile(q).test(e)
    assert ok('summary == "say \\"hi\\"\\n\\t\\\\ it\'s \\u00e9"')
    assert ok("summary == 'say \"hi\"\\n\\t\\\\ it\\'s \\xe9'")
    assert ok("ts == 1000000") and ok("ts == 1e6") and ok("ts > 9.99e5") and ok("elapsed_ms < -1")
    assert ok("elapsed_ms == -1.5") and ok("ts >= .5")
    assert kfl.compile("request.in == 1 or request.not == 2 or request.true").test({}) is False


def test_keywords_as_names_after_dots() -> None:
    assert kfl.compile("request.in == 1").test({"request": {"in": 1}})
    assert kfl.compile('request.null == "x"').test({"request": {"null": "x"}})


def test_protocols_narrowing() -> None:
    assert kfl.compile("redis").protocols == {"redis"}
    assert kfl.compile("redis or dns").protocols == {"redis", "dns"}
    assert kfl.compile("redis and status == 0").protocols == {"redis"}
    assert kfl.compile('(redis or dns) and protocol == "dns"').protocols == {"dns"}
    assert kfl.compile('protocol in ["kafka", "amqp"]').protocols == {"kafka", "amqp"}
    assert kfl.compile("redis or status == 0").protocols is None
    assert kfl.compile("not redis").protocols is None
    assert kfl.compile("tls").protocols is None


def test_query_call_never_raises() -> None:
    query = kfl.compile('request.path.startsWith("/")')
    assert query({"request": {"path": "/x"}}) is True
    broken: Any = {"request": _Explodes()}
    assert query(broken) is False


class _Explodes(dict):  # type: ignore[type-arg]
    def get(self, *args: Any) -> Any:
        raise RuntimeError("boom")


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "column", "message"), [
    ("response.status ==", 19, "expected a value after '==', got end of query"),
    ("response.status == ", 19, "expected a value after '==', got end of query"),
    ("http and", 9, "expected an expression after 'and', got end of query"),
    ("http and or dns", 10, "expected an expression after 'and', got the keyword 'or'"),
    ("(http", 6, "expected a comparison (== != < <= > >= in), 'and', 'or' or ')' after 'http'"),
    ("http)", 5, "expected a comparison"),
    ("status = 5", 8, "expected a comparison"),
    ("status == 5 5", 13, "expected 'and', 'or' or end of query after '5', got '5'"),
    ("request.", 9, "expected a name after '.', got end of query"),
    ("request[status]", 9, "expected a string or a number after '['"),
    ("request.x.contains(", 20, "expected a value or ')' after '('"),
    ("status in [1,", 14, "expected a value after ','"),
    ("@", 1, "expected an expression, got '@'"),
    ("http & dns", 6, "got '&' (write 'and' or '&&')"),
    ('summary == "abc', 12, "unterminated string"),
    ("summary == r'abc", 12, "unterminated string"),
    ('summary == "\\q"', 13, "unknown escape '\\q'"),
    ('summary == r"a(b"', 15, "invalid regex: missing )"),
    ('summary < r"a"', 11, "a regex can only be compared with == or !="),
    ('r"a"', 1, "a regex literal alone tests nothing"),
    ("summary.len(1)", 12, "len() takes no arguments, got 1"),
    ('summary.startsWith("a", "b")', 19, "startsWith() takes one argument, got 2"),
    ("summary.startsWith(1)", 20, "startsWith() takes a string or a regex"),
    ("summary.matches(summary)", 17, "matches() takes a string or regex literal"),
    ("summary.Contains('x')", 9, "unknown helper 'Contains' (did you mean 'contains'?)"),
    ("Status == 1", 1, "unknown field 'Status' (did you mean 'status'?)"),
    ("http.path", 1, "'http' is a protocol name"),
    ("status in 5", 11, "expected a list, a string or a field after 'in'"),
    ("request.x[1.5]", 11, "an index must be a whole number"),
    ("status == 1" + "0" * 5000, 11, "number too long"),
    ("status == 1e999", 11, "number out of range"),
    ("status == in", 11, "expected a value, got the keyword 'in'"),
    ("not", 4, "expected an expression after 'not', got end of query"),
    ("AND", 1, "unknown field 'AND'"),
])
def test_errors_say_where_and_what(query: str, column: int, message: str) -> None:
    with pytest.raises(KflError) as caught:
        kfl.compile(query)
    assert caught.value.column == column, str(caught.value)
    assert message in caught.value.message, str(caught.value)
    assert str(caught.value) == f"column {column}: {caught.value.message}"


def test_limits() -> None:
    with pytest.raises(KflError, match="longer than"):
        kfl.compile("http or " * 2000 + "dns")
    with pytest.raises(KflError, match="nests deeper"):
        kfl.compile("(" * 100 + "http" + ")" * 100)
    with pytest.raises(KflError, match="nests deeper"):
        kfl.compile("not " * 100 + "http")
    with pytest.raises(KflError, match="nests deeper"):
        kfl.compile("request" + ".a" * 100)
    assert kfl.compile(" or ".join(["http"] * 1000)).test({"protocol": "http"})   # flat, not deep
    with pytest.raises(KflError):
        kfl.compile(123)  # type: ignore[arg-type]


# -- fuzzing -----------------------------------------------------------------------------------
SEEDS = sorted(set(doc_blocks("kfl")) | set(doc_blocks("kfl-invalid")))
ALPHABET = string.ascii_letters + string.digits + " ._-\"'\\()[]{},=!<>&|@#r\n\té"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)
FIELD_VALUES = st.fixed_dictionaries({}, optional={
    name: JSON for name in ("protocol", "status", "summary", "tags", "tls", "complete", "elapsed_ms",
                            "notes")} | {
    "request": st.dictionaries(st.sampled_from(["method", "path", "headers", "command", "x", "in"]), JSON, max_size=4),
    "response": st.none() | st.dictionaries(st.sampled_from(["status", "error", "headers"]), JSON, max_size=3),
    "src": st.dictionaries(st.sampled_from(["name", "namespace", "ip", "port"]), JSON, max_size=3),
    "dst": st.dictionaries(st.sampled_from(["name", "namespace", "ip", "port"]), JSON, max_size=3),
})


def mutate(data: st.DataObject, text: str) -> str:
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace", "cut", "double"]))
        if action == "insert":
            text = text[:position] + data.draw(st.text(ALPHABET, min_size=1, max_size=3)) + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + data.draw(st.integers(1, 3)):]
        elif action == "replace" and position < len(text):
            text = text[:position] + data.draw(st.sampled_from(ALPHABET)) + text[position + 1:]
        elif action == "cut":
            text = text[:position]
        else:
            text = text[:position] + text[position // 2:]
    return text


def only_kfl_errors(text: str) -> kfl.Query | None:
    try:
        return kfl.compile(text)
    except KflError as error:
        assert 1 <= error.column <= len(text) + 1 or error.column == 1, (text, error)
        assert error.message
        return None


@settings(max_examples=300, deadline=None)
@given(st.text(ALPHABET, max_size=60))
def test_fuzz_random_text(text: str) -> None:
    only_kfl_errors(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_any_unicode(text: str) -> None:
    only_kfl_errors(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_queries_and_evaluation(data: st.DataObject) -> None:
    text = mutate(data, data.draw(st.sampled_from(SEEDS)))
    query = only_kfl_errors(text)
    if query is not None:
        for _ in range(3):
            sample = data.draw(FIELD_VALUES)
            result = query.test(sample)          # the raw closure: must not raise either
            assert isinstance(result, bool), (text, sample, result)
            if not query.matches_all:
                assert kfl.compile(f"not ({text})").test(sample) is (not result)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(EXPECTED)), FIELD_VALUES)
def test_fuzz_documented_queries_on_random_entries(query: str, sample: dict[str, Any]) -> None:
    assert isinstance(kfl.compile(query).test(sample), bool)
