"""Kubeshark's KFL2 names as aliases of ours (shark/kfl/aliases.py, docs/KFL.md "Kubeshark's
names"): queries copied from Kubeshark's docs select what they mean on our entries, functions,
arithmetic, and unknown names still fail with the column and the nearest name."""

from __future__ import annotations

import re
import time

import pytest

from shark import kfl
from shark.kfl.aliases import ALIASES, PROTOCOL_ALIASES
from shark.kfl.compiler import _Compiler
from shark.kfl.parser import parse
from test_kfl import DOC, SAMPLES, doc_blocks, entry, matching

ALL = set(SAMPLES)

# KFL2 query -> the samples it selects, each the same as our own spelling of it
EXPECTED = {
    "http && status_code >= 500": ("http and status >= 500", {"post_fail"}),
    'http && method == "POST" && status_code >= 500 && path.contains("/api")':
        ('http and request.method == "POST" and status >= 500 and request.path.contains("/api")', {"post_fail"}),
    'http && !path.contains("/health")': ('http and not request.path.contains("/health")', {"get_users", "post_fail"}),
    "http && elapsed_time > 1000000": ("http and elapsed_ms > 1000", {"post_fail"}),
    'dst.pod.namespace == "kube-system"': ('dst.namespace == "kube-system"', {"post_fail"}),
    'dst.service.name == "api"': ('dst.kind == "service" and dst.name == "api"', ALL - {"post_fail", "redis_get"}),
    'src.pod.name == "frontend"': ('src.name == "frontend"', ALL),
    'src.service.name == "frontend"': ('src.kind == "service"', set()),
    '"kube-system" in namespaces': ('src.namespace == "kube-system" or dst.namespace == "kube-system"', {"post_fail"}),
    '"orders" in pods': ('dst.name == "orders"', {"post_fail"}),
    'dns && "nope.example" in dns_questions': ('dns and request.qname == "nope.example"', {"dns_nx"}),
    "dns && dns_response && status_code != 0": ("dns and response != null and status != 0", {"dns_nx"}),
    'redis && redis_type == "GET" && redis_key.startsWith("user:")':
        ('redis and request.command == "GET" and request.key.startsWith("user:")', {"redis_get"}),
    "postgresql && !postgresql_success": ("postgres and response.error != null", {"pg_err"}),
    'url == "/api/v2/users?page=2"': ('request.path == "/api/v2/users" and request.query["page"][0] == "2"',
                                      {"get_users"}),
    'query_string["page"] == "2"': ('request.query["page"][0] == "2"', {"get_users"}),
    'http_version == "HTTP/1.1"': ('request.version == "HTTP/1.1"', {"get_users"}),
    "grpc && grpc_status != 0": ("grpc and status != 0", {"grpc_fail"}),
    'map_get(request.headers, "user-agent", "") == "curl/8.0"': ('request.headers["user-agent"] == "curl/8.0"',
                                                                 {"get_users"}),
    'map_get(request.headers, "x-none", "dflt") == "dflt"': ("request != null", ALL),
    "size(path) > 12": ("request.path.len() > 12", {"get_users", "grpc_fail"}),
    'timestamp == timestamp("2025-11-26T09:40:00Z")': ("ts == 1764150000", ALL),
    'timestamp > timestamp("2025-11-26T09:40:00+00:00") - duration("1s")': ("ts > 1764149999", ALL),
    'node_name == "node-a"': ('node == "node-a"', ALL),
    # KFL2 spells protocols in capitals (its docs: protocol is "HTTP", "DNS", "TCP"); these
    # matched nothing, silently, before
    'protocol == "HTTP"': ('protocol == "http"', {"get_users", "post_fail", "cut"}),
    '"DNS" == protocol': ('protocol == "dns"', {"dns_ok", "dns_nx"}),
    'protocol in ["REDIS", "PostgreSQL"]': ('protocol in ["redis", "postgres"]', {"redis_get", "redis_err", "pg_err"}),
    'protocol != "TCP"': ('protocol != "tcp"', ALL - {"tcp_flow"}),
    # KFL2's size names (unknown fields before)
    "http && tls_total_size == null": ("http", {"get_users", "post_fail", "cut"}),
    "tls && tls_request_size == 0": ('protocol == "tls" and size.request == 0', {"tls_hello"}),
    "dns && dns_total_size == 0": ("dns and size.request + size.response == 0", {"dns_ok", "dns_nx"}),
}


@pytest.mark.parametrize("query", EXPECTED)
def test_kfl2_queries_select_what_our_spelling_selects(query: str) -> None:
    ours, expected = EXPECTED[query]
    assert matching(ours) == expected, ours
    assert matching(query) == expected, query


def test_now_and_durations_are_fixed_when_compiled() -> None:
    recent = {**SAMPLES["get_users"], "ts": time.time() - 60}
    assert kfl.compile('timestamp > now() - duration("5m")')(recent)
    assert not kfl.compile('timestamp > now() - duration("30s")')(recent)
    assert kfl.compile('timestamp > now() - duration("1h30m")')(recent)
    assert kfl.compile("elapsed_time == 12500")(SAMPLES["get_users"])


def test_our_names_win_over_one_word_aliases() -> None:
    # `tls`, `id`, `protocol` are ours in both languages; `status` stays ours
    assert matching("tls") == {"tls_hello", "ebpf_http"}
    assert matching('protocol == "dns"') == {"dns_ok", "dns_nx"}
    assert matching("ws") == matching("websocket")


@pytest.mark.parametrize("query, column, message", [
    ("status_cod >= 500", 1, "unknown field 'status_cod' (did you mean 'status_code'?)"),
    ("http and pathh == 1", 10, "unknown field 'pathh' (did you mean 'path'?)"),
    ('dst.pod.nam == "x"', 1, "unknown field 'dst.pod.nam' (did you mean 'dst.pod.name'?)"),
    ("src.service == 1", 1, "unknown field 'src.service' (did you mean 'src.service.name'?)"),
    ('durtion("5m") > 0', 1, "unknown function 'durtion' (did you mean 'duration'?)"),
    ('timestamp > now() - duration("5 minutes")', 30, "duration(): '5 minutes' is not a duration"),
    ('timestamp > timestamp("yesterday")', 23, "timestamp(): 'yesterday' is not a time"),
    ("now(1) > 0", 4, "now() takes 0 arguments, got 1"),
    ('map_get(request.headers, "a") == 1', 8, "map_get() takes 3 arguments, got 2"),
    ('path - "x" == 1', 8, "'-' takes numbers"),
    ("duration(path) > 1", 10, "duration() takes a string literal"),
    ("local_labels.app == 1", 1, "unknown field 'local_labels'"),
    # an endpoint has ip, port, name, namespace, kind and KFL2's pod/service names: anything else
    # below src/dst (Kubeshark's src.dns) was accepted and silently null
    ('src.dns == "api.example.com"', 1, "unknown field 'src.dns'; under src only src.ip, src.port, src.name, "
                                        "src.namespace, src.kind, src.pod.name"),
    ('http and dst.namespce == "x"', 10, "unknown field 'dst.namespce' (did you mean 'dst.namespace'?)"),
    ('dst["dns"] == "x"', 1, "unknown field 'dst.dns'"),
])
def test_unknown_names_and_bad_calls_name_the_column(query: str, column: int, message: str) -> None:
    error = kfl.validate(query)
    assert error is not None, query
    assert error.column == column and message in str(error), str(error)


def test_every_alias_is_in_the_docs_table() -> None:
    section = DOC.split("## Kubeshark's names (KFL2)")[1].split("\n## ")[0]
    documented = {name for cell in re.findall(r"^\| ([^|]+) \|", section, re.M)
                  for name in re.findall(r"`([^`]+)`", cell)}
    assert set(ALIASES) | set(PROTOCOL_ALIASES) <= documented, set(ALIASES) - documented
    queries = [q for q in doc_blocks("kfl") if q in section]
    assert len(queries) >= 12 and all(kfl.validate(q) is None for q in queries)


# -- the same in scripts (hub/scripts/kfl.js) ----------------------------------------------------
@pytest.mark.parametrize("query", EXPECTED)
def test_scripts_select_the_same(query: str) -> None:
    from unit.test_scripts_kfl import JS
    assert {name for name, sample in SAMPLES.items() if JS.match(query, sample)} == EXPECTED[query][1]


@pytest.mark.parametrize("query", [
    "status_cod >= 500", "http and pathh == 1", 'dst.pod.nam == "x"', "src.service == 1", 'durtion("5m") > 0',
    'timestamp > now() - duration("5 minutes")', 'timestamp > timestamp("yesterday")', "now(1) > 0",
    'map_get(request.headers, "a") == 1', 'path - "x" == 1', "duration(path) > 1", "status + == 1",
    'timestamp("2026-02-30T00:00:00Z") > 0', 'timestamp("2026-01-01T00:00:00+24:00") > 0', "+1 == 1",
    'src.dns == "api.example.com"', 'http and dst.namespce == "x"', 'dst["dns"] == "x"'])
def test_scripts_refuse_the_same_at_the_same_column(query: str) -> None:
    from unit.test_scripts_kfl import JS
    error = kfl.validate(query)
    assert error is not None
    assert JS.check(query)["column"] == error.column, (query, JS.check(query), str(error))


@pytest.mark.parametrize("text", ["2026-03-14T22:00:00Z", "2026-03-14", "2026-03-14T22:00", "0001-01-01T00:00:00Z",
                                  "2026-03-14T22:00:00.5+05:30", "1969-12-31T23:59:59.999999-01:00",
                                  "2024-02-29T12:00:00Z", "9999-12-31T23:59:59Z"])
def test_times_and_durations_are_the_same_numbers_in_scripts(text: str) -> None:
    from unit.test_scripts_kfl import JS
    for expression in (f'timestamp("{text}")', f'timestamp("{text}") - duration("1h30m") + duration("0.25")'):
        number = _Compiler().value(parse(expression)).const     # what Python made of it
        assert isinstance(number, float)
        query = f"ts == {expression}"
        assert kfl.compile(query)({"ts": number}) and JS.match(query, {"ts": number}), (query, number)


# KFL2's sizes are our `size` of an entry of that protocol (null for another protocol's)
SIZED = {
    "redis": entry("redis", "redis", request={"command": "GET"}, response={"error": None},
                   size={"request": 30, "response": 12000}),
    "kafka_reply": entry("kafka_reply", "kafka", request={"api": "fetch"}, size={"request": 0, "response": 700}),
    "kafka_sent": entry("kafka_sent", "kafka", request={"api": "produce"}, size={"request": 90, "response": 700}),
    "pg": entry("pg", "postgres", request={"query": "SELECT 1"}, size={"request": 14, "response": 40}),
}
SIZE_QUERIES = {
    "redis && redis_total_size > 10000": {"redis"},
    "redis_request_size == 30 && redis_response_size == 12000": {"redis"},
    "kafka && kafka_size == 700": {"kafka_reply"},
    "kafka_size == 90 && kafka_request_size == 90 && kafka_response_size == 700": {"kafka_sent"},
    "postgresql_total_size == 54": {"pg"},
    "mysql_total_size >= 0 || dns_request_length >= 0 || amqp_total_size >= 0": set(),
    "kafka_request && !kafka_response": {"kafka_reply", "kafka_sent"},
}


@pytest.mark.parametrize("query", SIZE_QUERIES)
def test_kfl2_sizes_are_our_size_of_that_protocol(query: str) -> None:
    from unit.test_scripts_kfl import JS
    assert {name for name, e in SIZED.items() if kfl.compile(query)(e)} == SIZE_QUERIES[query]
    assert {name for name, e in SIZED.items() if JS.match(query, e)} == SIZE_QUERIES[query]


# KFL2 names of what is not captured here: the 400 says so and what to use instead (it was a
# bare "unknown field" with no near name to suggest), the same in scripts
ABSENT_QUERIES = [
    ('map_get(local_labels, "app", "") == "checkout"', 9, "Kubernetes labels and annotations are not captured"),
    ('conn && conn_state == "open"', 1, "L4 connection and flow records are not kept here"),
    ("flow && flow_local_pps > 1000", 1, "L4 connection and flow records are not kept here"),
    ('tcp && tcp_error_type != ""', 8, 'tcp.failure ("refused", "reset", "timeout", "abandoned")'),
    ("udp && udp_length > 1000", 8, "size.request and size.response count the bytes"),
    ('ldap && ldap_type == "bind"', 1, "there is no LDAP dissector here"),
    ('mongodb && mongodb_collection == "users"', 1, "there is no MongoDB dissector here"),
    ('gql && method == "POST"', 1, "GraphQL is not told apart here"),
    ('local_process_name == "nginx"', 1, "process names are not captured here"),
]


@pytest.mark.parametrize(("query", "column", "message"), ABSENT_QUERIES)
def test_kfl2_names_of_what_is_not_captured_say_so(query: str, column: int, message: str) -> None:
    from unit.test_scripts_kfl import JS
    error = kfl.validate(query)
    assert error is not None and error.column == column, (query, str(error))
    assert "a Kubeshark (KFL2) name with no counterpart here; " in str(error) and message in str(error), str(error)
    assert JS.check(query) == {"valid": False, "error": str(error), "column": column}
