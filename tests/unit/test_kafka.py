"""Kafka dissector: headers, flexible versions, pairing by correlation id, losses.

Messages are encoded with kafka-python's own protocol classes (the client library's bytes),
garbage by hand."""

from __future__ import annotations

import struct
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import sessions
from support.sessions import comparable
from worker.dissectors.base import Detect, Direction, Exchange, FlowInfo
from worker.dissectors import kafka
from worker.dissectors.kafka import APIS, MAX_API_KEY, PARSE_LIMIT, KafkaDissector, api_name, detect

with warnings.catch_warnings():   # kafka-python 3 loads its schemas with a deprecated API
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.protocol.metadata import (ApiVersionsRequest, ApiVersionsResponse,
                                         MetadataRequest, MetadataResponse)
    from kafka.protocol.producer import ProduceRequest, ProduceResponse

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
FLOW = FlowInfo("tcp", b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 9092)


class Conv(sessions.Conv):
    def __init__(self, body_limit: int = 0) -> None:
        super().__init__(lambda emit: KafkaDissector().session(FLOW, emit, body_limit))


def request(message, cid: int, client_id: str = "app") -> bytes:
    message.with_header(correlation_id=cid, client_id=client_id)
    return bytes(message.encode(header=True, framed=True))


def response(message, cid: int) -> bytes:
    message.with_header(correlation_id=cid)
    return bytes(message.encode(header=True, framed=True))


BATCH = b"\x00" * 61 + b"records"


def produce(version: int, cid: int, topic: str = "orders", acks: int = 1,
            client_id: str = "app") -> bytes:
    R = ProduceRequest
    data = R.TopicProduceData(name=topic, partition_data=[
        R.TopicProduceData.PartitionProduceData(index=0, records=BATCH)])
    return request(R(version=version, transactional_id=None, acks=acks, timeout_ms=1000,
                     topic_data=[data]), cid, client_id)


def produce_ok(version: int, cid: int, topic: str = "orders", error: int = 0) -> bytes:
    R = ProduceResponse
    part = R.TopicProduceResponse.PartitionProduceResponse(
        index=0, error_code=error, base_offset=5, log_append_time_ms=-1, log_start_offset=0,
        record_errors=[], error_message=None)
    return response(R(version=version, responses=[R.TopicProduceResponse(
        name=topic, partition_responses=[part])], throttle_time_ms=0), cid)


def fetch(version: int, cid: int, topic: str = "orders") -> bytes:
    R = FetchRequest
    part = R.FetchTopic.FetchPartition(partition=0, current_leader_epoch=-1, fetch_offset=0,
                                       last_fetched_epoch=-1, log_start_offset=-1,
                                       partition_max_bytes=1 << 20)
    return request(R(version=version, replica_id=-1, max_wait_ms=100, min_bytes=1,
                     max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                     topics=[R.FetchTopic(topic=topic, partitions=[part])],
                     forgotten_topics_data=[], rack_id=""), cid)


def fetch_reply(version: int, cid: int, error: int = 0, records: bytes = b"",
                topic: str = "orders") -> bytes:
    R = FetchResponse
    part = R.FetchableTopicResponse.PartitionData(
        partition_index=0, error_code=error, high_watermark=3, last_stable_offset=3,
        log_start_offset=0, aborted_transactions=[], preferred_read_replica=-1,
        records=records)
    return response(R(version=version, throttle_time_ms=0, error_code=0, session_id=0,
                      responses=[R.FetchableTopicResponse(topic=topic, partitions=[part])]), cid)


def metadata(version: int, cid: int, topics: list[str] | None) -> bytes:
    R = MetadataRequest
    items = None if topics is None else [R.MetadataRequestTopic(name=t) for t in topics]
    return request(R(version=version, topics=items, allow_auto_topic_creation=False,
                     include_cluster_authorized_operations=False,
                     include_topic_authorized_operations=False), cid)


def metadata_reply(version: int, cid: int, topics: list[tuple[str, int]]) -> bytes:
    R = MetadataResponse
    items = [R.MetadataResponseTopic(error_code=e, name=t, is_internal=False, partitions=[])
             for t, e in topics]
    broker = R.MetadataResponseBroker(node_id=0, host="broker", port=9092, rack=None)
    return response(R(version=version, throttle_time_ms=0, brokers=[broker], cluster_id="c",
                      controller_id=0, topics=items), cid)


def api_versions(version: int, cid: int) -> bytes:
    return request(ApiVersionsRequest(version=version, client_software_name="kp",
                                      client_software_version="3"), cid)


def api_versions_reply(version: int, cid: int, error: int = 0) -> bytes:
    keys = [ApiVersionsResponse.ApiVersion(api_key=0, min_version=0, max_version=9)]
    return response(ApiVersionsResponse(version=version, error_code=error, api_keys=keys,
                                        throttle_time_ms=0), cid)


def run(client: bytes, server: bytes, body_limit: int = 0) -> list[Exchange]:
    conv = Conv(body_limit)
    conv.c(client)
    if server:
        conv.s(server)
    return conv.close()


# -- headers and bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 5, 8, 9, 10, 12])
def test_produce(version: int) -> None:
    (ex,) = run(produce(version, 7), produce_ok(version, 7))
    assert ex.summary == "Produce orders" and ex.complete and ex.status == 0
    assert ex.request == {"api_key": 0, "api": "Produce", "api_version": version,
                          "correlation_id": 7, "client_id": "app", "topic": "orders",
                          "topics": ["orders"], "acks": 1}
    assert ex.response["correlation_id"] == 7 and ex.response["error"] is None
    assert ex.response["topics"] == ["orders"]
    assert ex.request_size == len(produce(version, 7))
    assert ex.response_size == len(produce_ok(version, 7))


def test_produce_partition_error() -> None:
    (ex,) = run(produce(8, 1), produce_ok(8, 1, error=3))
    assert ex.status == 3 and ex.response["error"] == "UNKNOWN_TOPIC_OR_PARTITION"


@pytest.mark.parametrize("version", [8, 9])
def test_produce_status_is_the_first_partition_error(version: int) -> None:
    R = ProduceResponse
    parts = [R.TopicProduceResponse.PartitionProduceResponse(
        index=i, error_code=error, base_offset=5, log_append_time_ms=-1, log_start_offset=0,
        record_errors=[], error_message=None) for i, error in enumerate((0, 6, 3))]
    reply = response(R(version=version, throttle_time_ms=0, responses=[
        R.TopicProduceResponse(name="a", partition_responses=parts[:1]),
        R.TopicProduceResponse(name="b", partition_responses=parts[1:])]), 1)
    (ex,) = run(produce(version, 1), reply)
    assert ex.status == 6 and ex.response["error"] == "NOT_LEADER_OR_FOLLOWER"
    assert ex.response["topics"] == ["a", "b"]


def test_each_request_carries_its_own_client_id() -> None:
    # The reader and the session keep the last client id (compared, not matched or decoded
    # again): a change within a connection is seen, and an id that is not printable makes
    # the message not a request (resync), even one that starts like the kept id.
    bad = bytearray(produce(8, 3))
    bad[14 + 2] = 0x01                  # "ap\x01"
    client = (produce(8, 1) + produce(8, 2, client_id="other") + bytes(bad) +
              produce(8, 4) + produce(8, 5, client_id="appx"))
    server = produce_ok(8, 1) + produce_ok(8, 2) + produce_ok(8, 4) + produce_ok(8, 5)
    out = run(client, server)
    assert [(ex.request["correlation_id"], ex.request["client_id"]) for ex in out] == [
        (1, "app"), (2, "other"), (4, "app"), (5, "appx")]
    assert all(ex.complete and ex.status == 0 for ex in out)


def test_api_tables_are_apis() -> None:
    # _flexible and api_name read lists made from APIS: the same answers as APIS, for
    # unknown keys too
    for key in range(-2, MAX_API_KEY + 3):
        first = APIS.get(key, ("", None))[1]
        for version in (0, 1, 2, 3, 5, 9, 12, 20, 21, 32767):
            assert kafka._flexible(key, version) == (first is not None and version >= first)
        assert api_name(key) == (APIS[key][0] if key in APIS else f"api-{key}")


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_fetch(version: int) -> None:
    (ex,) = run(fetch(version, 2), fetch_reply(version, 2, error=1))
    assert ex.summary == "Fetch orders" and ex.request["topics"] == ["orders"]
    assert ex.status == 1 and ex.response["error"] == "OFFSET_OUT_OF_RANGE"
    assert ex.response["topics"] == ["orders"]


def test_fetch_v13_names_topics_by_id() -> None:
    R = FetchRequest
    part = R.FetchTopic.FetchPartition(partition=0, current_leader_epoch=-1, fetch_offset=0,
                                       last_fetched_epoch=-1, log_start_offset=-1,
                                       partition_max_bytes=1)
    topic_id = "0123456789abcdef0123456789abcdef"
    raw = request(R(version=13, max_wait_ms=1, min_bytes=1, max_bytes=1, isolation_level=0,
                    session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=[],
                    topics=[R.FetchTopic(topic_id=topic_id, partitions=[part])]), 4)
    (ex,) = run(raw, b"")
    assert ex.request["topics"] == [topic_id] and ex.response is None


def test_large_fetch_response_is_skipped() -> None:
    conv = Conv()
    conv.c(fetch(11, 9))
    whole = fetch_reply(11, 9, records=b"r" * 2_000_000)
    for i in range(0, len(whole), 65536):
        conv.s(whole[i:i + 65536])
        assert conv.session.server.held_bytes() <= PARSE_LIMIT   # the rest passed by length
    (ex,) = conv.close()
    assert ex.complete and ex.status == 0 and ex.response["topics"] == ["orders"]
    assert ex.response_size == len(whole)


@pytest.mark.parametrize("version, topics, expected", [
    (0, [], None), (1, None, None), (4, ["a", "b"], ["a", "b"]), (9, ["a"], ["a"]),
    (12, ["a"], ["a"]), (12, None, None), (8, [], [])])
def test_metadata(version: int, topics, expected) -> None:
    (ex,) = run(metadata(version, 3, topics), metadata_reply(version, 3, [("a", 0), ("b", 3)]))
    assert ex.request["topics"] == expected
    assert ex.response["topics"] == ["a", "b"] and ex.status == 3
    assert ex.summary == "Metadata" + (f" {', '.join(expected)}" if expected else "")


@pytest.mark.parametrize("version", [0, 2, 3, 4])
def test_api_versions_flexible_header(version: int) -> None:
    (ex,) = run(api_versions(version, 1), api_versions_reply(min(version, 3), 1))
    assert ex.request["client_id"] == "app" and ex.request["api_version"] == version
    assert ex.status == 0 and ex.summary == "ApiVersions" and not ex.notes


def test_api_versions_unsupported() -> None:
    (ex,) = run(api_versions(4, 1), api_versions_reply(0, 1, error=35))
    assert ex.status == 35 and ex.response["error"] == "UNSUPPORTED_VERSION"


def test_null_client_id_and_unknown_api() -> None:
    body = struct.pack(">hhih", 3, 0, 11, -1) + struct.pack(">i", 0)
    raw = struct.pack(">i", len(body)) + body
    (ex,) = run(raw, struct.pack(">ii", 12, 11) + struct.pack(">iiii", 0, 0, -1, 0))
    assert ex.request["client_id"] is None and ex.request["topics"] is None


def test_body_limit_keeps_raw_bytes() -> None:
    (ex,) = run(produce(8, 1), produce_ok(8, 1), body_limit=40)
    assert ex.request_body == produce(8, 1)[:40]
    assert ex.response_body == produce_ok(8, 1)[:40]


def test_raw_bytes_below_the_size_field_are_the_size_field() -> None:
    message = produce(8, 1)
    conv = Conv(body_limit=2)
    conv.c(message[:30]).c(message[30:])
    (ex,) = conv.close()
    assert ex.request_body == message[:4]


# -- pairing ---------------------------------------------------------------------------------

def test_responses_pair_by_correlation_id() -> None:
    out = run(produce(8, 1, "a") + fetch(11, 2, "b") + metadata(8, 3, ["c"]),
              metadata_reply(8, 3, [("c", 0)]) + produce_ok(8, 1, "a") + fetch_reply(11, 2))
    assert [ex.summary for ex in out] == ["Metadata c", "Produce a", "Fetch b"]
    assert all(ex.complete and ex.status == 0 for ex in out)


def test_acks_zero_has_no_response() -> None:
    conv = Conv()
    conv.c(produce(8, 1, acks=0))
    assert len(conv.out) == 1                     # emitted at once
    conv.c(produce(8, 2))
    conv.s(produce_ok(8, 2))
    out = conv.close()
    assert out[0].response is None and out[0].complete
    assert out[0].notes == ["acks=0: no response expected"]
    assert out[1].status == 0


def test_response_without_request_and_request_without_response() -> None:
    out = run(produce(8, 5), produce_ok(8, 4))
    assert out[0].notes == ["request not captured"] and out[0].request == {}
    assert out[0].response["correlation_id"] == 4
    assert out[1].summary == "Produce orders" and not out[1].complete
    assert out[1].notes == ["no response"]


# -- splits, losses, garbage -----------------------------------------------------------------

def test_every_split_gives_the_same_result() -> None:
    client = api_versions(3, 1) + produce(9, 2)
    server = api_versions_reply(3, 1) + produce_ok(9, 2)
    whole = [comparable(ex) for ex in run(client, server)]
    assert len(whole) == 2
    for cut in range(1, max(len(client), len(server))):
        conv = Conv()
        for part in (client[:cut], client[cut:]):
            if part:
                conv.c(part)
        for part in (server[:cut], server[cut:]):
            if part:
                conv.s(part)
        assert [comparable(ex) for ex in conv.close()] == whole, cut


def test_client_gap_resyncs_on_next_request() -> None:
    conv = Conv()
    first = produce(8, 1)
    conv.c(first[:40])
    conv.gap(C2S, len(first) - 40)
    conv.c(fetch(11, 2))
    conv.s(produce_ok(8, 1) + fetch_reply(11, 2))
    out = conv.close()
    assert [(ex.summary, ex.complete) for ex in out] == [
        ("Produce orders", False), ("response 1 (request not captured)", True),
        ("Fetch orders", True)]


def test_server_gap_resyncs_on_waiting_correlation_id() -> None:
    conv = Conv()
    conv.c(produce(8, 1))
    reply = produce_ok(8, 1)
    conv.s(reply[:10])
    conv.gap(S2C, len(reply) - 10)
    conv.c(fetch(11, 2))
    conv.s(b"\x01\x02" + fetch_reply(11, 2))     # junk, then the next response
    out = conv.close()
    assert [(ex.summary, ex.complete) for ex in out] == [
        ("Produce orders", False), ("Fetch orders", True)]


def test_message_found_while_resyncing_starts_in_the_chunk_of_its_first_byte() -> None:
    conv = Conv()
    message = metadata(8, 2, ["x"])
    conv.c(b"\x00garbage" + message[:3])          # not a request: resync; the tail is kept
    first = conv.calls
    conv.c(message[3:8]).c(message[8:])
    conv.s(metadata_reply(8, 2, [("x", 0)]))
    (ex,) = conv.close()
    assert ex.summary == "Metadata x" and ex.first_ref == (7, first)
    assert ex.start_ns == 1000 * first and ex.client_offset == 8


def test_mid_stream_start() -> None:
    tail = produce(8, 1)[25:]
    conv = Conv()
    conv.c(tail + metadata(8, 2, ["x"]) + fetch(11, 3))
    conv.s(metadata_reply(8, 2, [("x", 0)]) + fetch_reply(11, 3))
    out = conv.close()
    assert [ex.summary for ex in out] == ["Metadata x", "Fetch orders"]
    assert all(ex.complete for ex in out)


def test_garbage_frame_size() -> None:
    conv = Conv()
    conv.c(b"\x7f\xff\xff\xff garbage garbage" + produce(8, 1))
    conv.s(produce_ok(8, 1))
    (ex,) = conv.close()
    assert ex.summary == "Produce orders" and ex.complete


def test_truncated_body_is_noted() -> None:
    body = struct.pack(">hhih", 0, 8, 1, 3) + b"app" + b"\x00"    # Produce cut after a byte
    (ex,) = run(struct.pack(">i", len(body)) + body, b"")
    assert "malformed: request body shorter than its fields" in ex.notes


# -- detection -----------------------------------------------------------------------------

@pytest.mark.parametrize("client, server, answer", [
    (produce(8, 1), b"", Detect.MATCH),
    (produce(8, 1)[:9], b"", Detect.MORE),
    (b"GET / HTTP/1.1\r\n", b"", Detect.NO),
    (b"*1\r\n$4\r\nPING\r\n", b"", Detect.NO),
    (b"\x16\x03\x01\x02\x00\x01", b"", Detect.NO),
    (struct.pack(">ihhih", 20, 3, 1, 1, 4) + b"\x01\x02\x03\x04", b"", Detect.NO),
    (b"", b"\x4a\x00\x00\x00\x0a5.5.5", Detect.NO),
    (produce(8, 1)[20:] + metadata(8, 2, []) + fetch(11, 3), b"", Detect.MATCH),
])
def test_detect(client: bytes, server: bytes, answer: Detect) -> None:
    assert detect(client, server) is answer


# -- properties ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(1, 50))
def test_random_bytes_never_raise(client: bytes, server: bytes, step: int) -> None:
    conv = Conv(body_limit=64)
    prefix = produce(8, 1)
    conv.c(prefix)
    for i in range(0, max(len(client), len(server)), step):
        if client[i:i + step]:
            conv.c(client[i:i + step])
        if server[i:i + step]:
            conv.s(server[i:i + step])
    conv.gap(S2C, 5)
    conv.s(server[:20] or b"\x00")
    for ex in conv.close():
        assert isinstance(ex.summary, str)
    detect(client, server)


_MESSAGES = st.sampled_from([
    (produce(8, 1), produce_ok(8, 1)), (fetch(12, 2), fetch_reply(12, 2, error=6)),
    (metadata(12, 3, ["m"]), metadata_reply(12, 3, [("m", 0)])),
    (api_versions(3, 4), api_versions_reply(3, 4))])


@settings(max_examples=100, deadline=None)
@given(st.lists(_MESSAGES, min_size=1, max_size=4, unique=True), st.data())
def test_random_splits_do_not_change_result(pairs, data) -> None:
    client = b"".join(p[0] for p in pairs)
    server = b"".join(p[1] for p in pairs)
    whole = [comparable(ex) for ex in run(client, server)]
    conv = Conv()
    for blob, send in ((client, conv.c), (server, conv.s)):
        cuts = sorted(data.draw(st.sets(st.integers(1, len(blob) - 1), max_size=8)))
        for a, b in zip([0, *cuts], [*cuts, len(blob)]):
            send(blob[a:b])
    assert [comparable(ex) for ex in conv.close()] == whole
