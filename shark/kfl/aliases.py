"""Kubeshark's KFL2 names as aliases of ours, so a query copied from Kubeshark's docs runs here
(docs/KFL.md, "Kubeshark's names"). KFL2 is CEL over Kubeshark's own entry; each alias is a
getter over our Entry that gives the value the KFL2 name means, or null where we have none
(our null rules then apply: a comparison with null is false, KFL2 would compare with "" or 0).

`ALIASES` maps a KFL2 variable (dotted for `dst.pod.namespace`) to (what it means in our
names, getter); `PROTOCOL_ALIASES` maps KFL2 protocol flags to our protocol names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

Getter = Callable[[dict[str, Any]], Any]

PROTOCOL_ALIASES = {"ws": "websocket", "postgresql": "postgres"}


def _at(*path: str) -> Getter:
    def get(entry: dict[str, Any]) -> Any:
        value: Any = entry
        for key in path:
            if type(value) is not dict:
                return None
            value = value.get(key)
        return value
    return get


def _of(protocol: str, get: Getter) -> Getter:
    """`get`, for entries of that protocol only (KFL2's protocol-prefixed names)."""
    return lambda entry: get(entry) if entry.get("protocol") == protocol else None


def _endpoint(side: str, kinds: tuple[str, ...], field: str) -> Getter:
    """`src.pod.name` and friends: our endpoint's name/namespace when its kind is one of
    `kinds` (KFL2's pod fields fall back to the service, so pods take both)."""
    def get(entry: dict[str, Any]) -> Any:
        point = entry.get(side)
        if type(point) is dict and point.get("kind") in kinds:
            return point.get(field)
        return None
    return get


def _both(kinds: tuple[str, ...] | None, field: str) -> Getter:
    """`namespaces`, `pods`, `services`: the distinct values of both ends, as a list."""
    def get(entry: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for side in ("src", "dst"):
            point = entry.get(side)
            if type(point) is dict and (kinds is None or point.get("kind") in kinds):
                value = point.get(field)
                if type(value) is str and value and value not in out:
                    out.append(value)
        return out
    return get


def _elapsed_us(entry: dict[str, Any]) -> Any:
    ms = entry.get("elapsed_ms")
    return ms * 1000 if type(ms) in (int, float) else None


def _url(entry: dict[str, Any]) -> Any:
    request = entry.get("request")
    if type(request) is not dict or type(request.get("path")) is not str:
        return None
    query = request.get("query")
    if type(query) is not dict or not query:
        return request["path"]
    if not all(type(v) is str or (type(v) is list and all(type(s) is str for s in v)) for v in query.values()):
        return None    # not what a dissector writes (lists of strings)
    return request["path"] + "?" + urlencode(query, doseq=True)


def _query_string(entry: dict[str, Any]) -> Any:
    query = _at("request", "query")(entry)
    if type(query) is not dict:
        return None
    return {key: (values[0] if type(values) is list and values else values) for key, values in query.items()}


def _upper(get: Getter) -> Getter:
    return lambda entry: v.upper() if type(v := get(entry)) is str else None


def _list_of(get: Getter) -> Getter:
    return lambda entry: [] if (v := get(entry)) is None else [v]


def _success(protocol: str) -> Getter:
    def get(entry: dict[str, Any]) -> Any:
        if entry.get("protocol") != protocol or type(entry.get("response")) is not dict:
            return False
        return entry["response"].get("error") is None
    return get


def _redis_command(entry: dict[str, Any]) -> Any:
    request = entry.get("request")
    if entry.get("protocol") != "redis" or type(request) is not dict or type(request.get("command")) is not str:
        return None
    arguments = request.get("arguments")
    if type(arguments) is list and all(type(a) is str for a in arguments):
        return " ".join([request["command"], *arguments])
    return request["command"]


def _list(value: Any) -> list[Any]:
    return value if type(value) is list else []


def _is(protocol: str, side: str) -> Getter:
    return lambda entry: entry.get("protocol") == protocol and type(entry.get(side)) is dict


def _size(protocol: str, side: str) -> Getter:
    return _of(protocol, _at("size", side))


def _total(protocol: str) -> Getter:
    """KFL2's *_total_size: request plus response bytes, 0 for a side not seen."""
    def get(entry: dict[str, Any]) -> Any:
        size = entry.get("size")
        if entry.get("protocol") != protocol or type(size) is not dict:
            return None
        return sum(v for v in (size.get("request"), size.get("response")) if type(v) is int)
    return get


def _kafka_size(entry: dict[str, Any]) -> Any:
    """KFL2's kafka_size: the request's bytes, else the response's."""
    request, response = _size("kafka", "request")(entry), _size("kafka", "response")(entry)
    return request if type(request) is int and request > 0 else response


# KFL2's per-protocol sizes (request, response, total), all from our `size` of the entry
_SIZES = {"dns": ("dns_request_length", "dns_response_length", "dns_total_size"),
          "redis": ("redis_request_size", "redis_response_size", "redis_total_size"),
          "kafka": ("kafka_request_size", "kafka_response_size", None),
          "amqp": ("amqp_request_length", "amqp_response_length", "amqp_total_size"),
          "mysql": ("mysql_request_size", "mysql_response_size", "mysql_total_size"),
          "postgres": ("postgresql_request_size", "postgresql_response_size", "postgresql_total_size"),
          "tls": ("tls_request_size", "tls_response_size", "tls_total_size")}


def _sizes() -> dict[str, tuple[str, Getter]]:
    out: dict[str, tuple[str, Getter]] = {}
    for protocol, (request, response, total) in _SIZES.items():
        out[request] = (f"size.request of {protocol} entries", _size(protocol, "request"))
        out[response] = (f"size.response of {protocol} entries", _size(protocol, "response"))
        if total:
            out[total] = (f"size.request + size.response of {protocol} entries", _total(protocol))
    out["kafka_size"] = ("size.request of kafka entries, else size.response", _kafka_size)
    return out


ALIASES: dict[str, tuple[str, Getter]] = {
    # HTTP (and HTTP/2, gRPC)
    "status_code": ("status", _at("status")),
    "method": ("request.method", _at("request", "method")),
    "path": ("request.path", _at("request", "path")),
    "url": ("request.path + '?' + the query string", _url),
    "http_version": ("request.version", _at("request", "version")),
    "query_string": ("request.query (the first value of each)", _query_string),
    "request_body_size": ("request.content_length", _at("request", "content_length")),
    "response_body_size": ("response.content_length", _at("response", "content_length")),
    # time
    "timestamp": ("ts (epoch seconds; compare with timestamp(\"...\") or now())", _at("ts")),
    "elapsed_time": ("elapsed_ms x 1000 (microseconds)", _elapsed_us),
    # where
    "node_name": ("node", _at("node")),
    "node_id": ("node", _at("node")),
    "worker": ("node", _at("node")),
    "src.pod.name": ("src.name of a pod (or service)", _endpoint("src", ("pod", "service"), "name")),
    "src.pod.namespace": ("src.namespace of a pod (or service)", _endpoint("src", ("pod", "service"), "namespace")),
    "dst.pod.name": ("dst.name of a pod (or service)", _endpoint("dst", ("pod", "service"), "name")),
    "dst.pod.namespace": ("dst.namespace of a pod (or service)", _endpoint("dst", ("pod", "service"), "namespace")),
    "src.service.name": ("src.name of a service", _endpoint("src", ("service",), "name")),
    "src.service.namespace": ("src.namespace of a service", _endpoint("src", ("service",), "namespace")),
    "dst.service.name": ("dst.name of a service", _endpoint("dst", ("service",), "name")),
    "dst.service.namespace": ("dst.namespace of a service", _endpoint("dst", ("service",), "namespace")),
    "namespaces": ("[src.namespace, dst.namespace]", _both(None, "namespace")),
    "pods": ("the names of src and dst that are pods", _both(("pod",), "name")),
    "services": ("the names of src and dst that are services", _both(("service",), "name")),
    # DNS
    "dns_questions": ("[request.qname]", _of("dns", _list_of(_at("request", "qname")))),
    "dns_question_types": ("[request.qtype]", _of("dns", _list_of(_at("request", "qtype")))),
    "dns_answers": ("the data of response.answers",
                    _of("dns", lambda e: [a.get("data") for a in _list(_at("response", "answers")(e))
                                          if type(a) is dict])),
    "dns_request": ("dns (every entry has its query)", _is("dns", "request")),
    "dns_response": ("dns and response != null", _is("dns", "response")),
    # Redis
    "redis_type": ("request.command", _of("redis", _at("request", "command"))),
    "redis_command": ("request.command and request.arguments", _redis_command),
    "redis_key": ("request.key", _of("redis", _at("request", "key"))),
    # Kafka
    "kafka_request": ("kafka (every entry has its request)", _is("kafka", "request")),
    "kafka_response": ("kafka and response != null", _is("kafka", "response")),
    "kafka_api_key": ("request.api_key", _of("kafka", _at("request", "api_key"))),
    "kafka_api_key_name": ("request.api in upper case", _of("kafka", _upper(_at("request", "api")))),
    "kafka_client_id": ("request.client_id", _of("kafka", _at("request", "client_id"))),
    "kafka_request_summary": ("request.topic", _of("kafka", _at("request", "topic"))),
    # AMQP
    "amqp_method": ("request.method", _of("amqp", _at("request", "method"))),
    "amqp_request": ("amqp (every entry has its request)", _is("amqp", "request")),
    "amqp_response": ("amqp and response != null", _is("amqp", "response")),
    # WebSocket
    "ws_request": ("websocket (every entry has its request)", _is("websocket", "request")),
    "ws_response": ("websocket and response != null", _is("websocket", "response")),
    # MySQL
    "mysql_command": ("request.command", _of("mysql", _at("request", "command"))),
    "mysql_query": ("request.query", _of("mysql", _at("request", "query"))),
    "mysql_database": ("request.database", _of("mysql", _at("request", "database"))),
    "mysql_success": ("response != null and response.error == null", _success("mysql")),
    "mysql_error_code": ("response.error.code", _of("mysql", _at("response", "error", "code"))),
    "mysql_error_message": ("response.error.message", _of("mysql", _at("response", "error", "message"))),
    # PostgreSQL
    "postgresql_query": ("request.query", _of("postgres", _at("request", "query"))),
    "postgresql_database": ("request.database", _of("postgres", _at("request", "database"))),
    "postgresql_user": ("request.user", _of("postgres", _at("request", "user"))),
    "postgresql_command": ("response.command_tag's first word",
                           _of("postgres", lambda e: t.split(" ", 1)[0] or None
                               if type(t := _at("response", "command_tag")(e)) is str else None)),
    "postgresql_success": ("response != null and response.error == null", _success("postgres")),
    "postgresql_error_code": ("response.error.code (SQLSTATE)", _of("postgres", _at("response", "error", "code"))),
    "postgresql_error_message": ("response.error.message", _of("postgres", _at("response", "error", "message"))),
    # gRPC
    "grpc_method": ("request.method", _of("grpc", _at("request", "method"))),
    "grpc_status": ("status", _of("grpc", _at("status"))),
    # sizes in bytes
    **_sizes(),
}

# KFL2 names of what is not captured here, each with what to use instead or why not: a query
# copied from Kubeshark's docs that uses one gets this in its 400, not a bare "unknown field"
# (with no near name to suggest). A key ending in "_" stands for every name it begins.
_L4 = ("Kubeshark's L4 connection and flow records are not kept here; every TCP entry carries its "
       "connection's facts in tcp.* (tcp.handshake_ms, tcp.rst, tcp.failure, tcp.retransmitted_bytes)")
_PAYLOAD = ("the packets are in the entry's pcap (GET /entries/{id}/pcap); size.request and "
            "size.response count the bytes")
ABSENT: dict[str, str] = {
    **dict.fromkeys(("local_labels", "remote_labels", "local_annotations", "remote_annotations"),
                    "Kubernetes labels and annotations are not captured here; the endpoints' names are "
                    "(src.name, dst.namespace, src.pod.name, dst.service.name)"),
    **dict.fromkeys(("local_process_name", "remote_process_name"), "process names are not captured here"),
    **dict.fromkeys(("conn", "conn_", "flow", "flow_", "tcp_conn", "udp_conn", "tcp_flow", "udp_flow"), _L4),
    **dict.fromkeys(("tcp_error_type", "tcp_error_message"),
                    "a TCP failure here is tcp.failure (\"refused\", \"reset\", \"timeout\", \"abandoned\") "
                    "and tcp.rst (\"client\", \"server\")"),
    **dict.fromkeys(("tcp_method", "tcp_payload", "udp_length", "udp_checksum", "udp_payload"), _PAYLOAD),
    **dict.fromkeys(("request_headers_size", "response_headers_size"),
                    "size.request and size.response count headers and body together"),
    **dict.fromkeys(("capture_source", "capture_backend", "capture_source_code", "capture"),
                    "entries come from packets, and eBPF TLS cleartext is marked tls == true"),
    **dict.fromkeys(("tls_summary", "tls_info"),
                    "a tls entry has request.sni, response.version and response.cipher"),
    **{name: f"there is no {label} dissector here" for names, label in (
        (("ldap", "ldap_"), "LDAP"), (("radius", "radius_"), "RADIUS"), (("diameter", "diameter_"), "Diameter"),
        (("mongodb", "mongodb_"), "MongoDB"), (("sctp", "sctp_"), "SCTP"), (("icmp", "icmp_"), "ICMP"))
       for name in names},
    **dict.fromkeys(("gql", "gqlv1", "gqlv2"), "GraphQL is not told apart here: its requests are http entries "
                                                "(http && path.contains(\"graphql\"))"),
}


def absent(name: str) -> str | None:
    """Why a KFL2 name has no counterpart here (ABSENT), or None for a name KFL2 lacks too."""
    if name in ABSENT:
        return ABSENT[name]
    prefixes = [key for key in ABSENT if key.endswith("_") and name.startswith(key)]
    return ABSENT[max(prefixes, key=len)] if prefixes else None


# Functions called by name, KFL2 (CEL) style: name -> number of arguments
FUNCTIONS = {"now": 0, "duration": 1, "timestamp": 1, "size": 1, "map_get": 3}


def map_get(container: Any, key: Any, default: Any) -> Any:
    """CEL's map_get(map, key, default): the value at `key`, or `default` when absent."""
    if type(container) is dict and type(key) is str and key in container:
        return container[key]
    return default
