"""Regenerate tests/golden/kafka/*.pcap: kafka-python's real clients against a small fake broker.

    .venv/bin/python tests/golden/capture_kafka.py      (as root; then UPDATE_GOLDEN=1 tests)

No Kafka broker can run on this machine (Kafka is in no registry we can use: not PyPI, Debian
or npm), so FakeBroker below answers just enough of the protocol for kafka-python's
KafkaProducer, KafkaConsumer and KafkaAdminClient: ApiVersions, Metadata, Produce, Fetch and
ListOffsets, one partition per topic, records kept in memory. Requests and responses are
decoded and encoded with kafka-python's own protocol classes (kafka.protocol.*), so the
client's bytes are real client bytes and the broker's follow the same message definitions.

Two captures, differing only in the API versions the broker advertises (the clients pick the
highest both sides know):
  legacy.pcap    ApiVersions <= 2, Metadata <= 8, Produce <= 8, Fetch <= 11, ListOffsets <= 5
                 (no flexible versions after the ApiVersions downgrade)
  flexible.pcap  ApiVersions <= 3, Metadata <= 12, Produce <= 9, Fetch <= 12, ListOffsets <= 7
                 (compact strings, tagged fields, request header v2)
Traffic: the clients' first ApiVersions (answered UNSUPPORTED_VERSION when the client asks
for more than the broker advertises, as real brokers do), Metadata, three records produced to
"orders" and one to "payments" (acks=1), one record with acks=0 (no response), a consumer
that seeks past the end of "orders" (Fetch answered OFFSET_OUT_OF_RANGE), resets with
ListOffsets and fetches the three records, and an admin client listing topics.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.protocol.consumer import (FetchRequest, FetchResponse, ListOffsetsRequest,
                                     ListOffsetsResponse)
from kafka.protocol.metadata import (ApiVersionsRequest, ApiVersionsResponse, MetadataRequest,
                                     MetadataResponse)
from kafka.protocol.producer import ProduceRequest, ProduceResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, record  # noqa: E402
from support.processes import free_port  # noqa: E402

PROFILES = {
    "legacy": {18: 2, 3: 8, 0: 8, 1: 11, 2: 5},
    "flexible": {18: 3, 3: 12, 0: 9, 1: 12, 2: 7},
}
MIN_VERSIONS = {18: 0, 3: 0, 0: 3, 1: 4, 2: 1}
REQUESTS = {18: ApiVersionsRequest, 3: MetadataRequest, 0: ProduceRequest, 1: FetchRequest,
            2: ListOffsetsRequest}


class FakeBroker:
    """One broker (node 0) with one partition per topic; see the module doc."""

    def __init__(self, port: int, versions: dict[int, int]) -> None:
        self.port = port
        self.versions = versions
        self.logs: dict[str, list[tuple[int, bytes]]] = {}   # topic -> [(base offset, batch)]
        self.next_offset: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", port))
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.server.close()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                head = _recv(conn, 4)
                if head is None:
                    return
                frame = _recv(conn, struct.unpack(">i", head)[0])
                if frame is None:
                    return
                api_key, version, cid = struct.unpack_from(">hhi", frame)
                answer = self._answer(api_key, version, cid, frame)
                if answer is not None:
                    conn.sendall(answer)

    def _answer(self, api_key: int, version: int, cid: int, frame: bytes) -> bytes | None:
        if api_key == 18 and version > self.versions[18]:
            # A real broker answers an ApiVersions it does not know in version 0 form.
            response = ApiVersionsResponse(version=0, error_code=35, api_keys=self._api_keys())
            return _framed(response, cid)
        request = REQUESTS[api_key].decode(frame, version=version, header=True)
        if api_key == 18:
            response = ApiVersionsResponse(version=version, error_code=0,
                                           api_keys=self._api_keys(), throttle_time_ms=0)
        elif api_key == 3:
            response = self._metadata(request, version)
        elif api_key == 0:
            response = self._produce(request, version)
            if request.acks == 0:
                return None
        elif api_key == 1:
            response = self._fetch(request, version)
        else:
            response = self._list_offsets(request, version)
        return _framed(response, cid)

    def _api_keys(self) -> list:
        return [ApiVersionsResponse.ApiVersion(api_key=k, min_version=MIN_VERSIONS[k],
                                               max_version=v)
                for k, v in sorted(self.versions.items())]

    def _metadata(self, request, version: int):
        names = [t.name for t in request.topics] if request.topics else sorted(self.logs)
        R = MetadataResponse
        topics = []
        for name in names:
            with self.lock:
                self.logs.setdefault(name, [])
                self.next_offset.setdefault(name, 0)
            partition = R.MetadataResponseTopic.MetadataResponsePartition(
                error_code=0, partition_index=0, leader_id=0, leader_epoch=0,
                replica_nodes=[0], isr_nodes=[0], offline_replicas=[])
            topics.append(R.MetadataResponseTopic(error_code=0, name=name, is_internal=False,
                                                  partitions=[partition]))
        broker = R.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port, rack=None)
        return R(version=version, throttle_time_ms=0, brokers=[broker],
                 cluster_id="shark-golden", controller_id=0, topics=topics)

    def _produce(self, request, version: int):
        R = ProduceResponse
        responses = []
        for topic in request.topic_data:
            parts = []
            for part in topic.partition_data:
                batch = bytearray(bytes(part.records))
                count = struct.unpack_from(">i", batch, 23)[0] + 1   # lastOffsetDelta + 1
                with self.lock:
                    base = self.next_offset.get(topic.name, 0)
                    struct.pack_into(">q", batch, 0, base)   # the CRC does not cover it
                    self.logs.setdefault(topic.name, []).append((base, bytes(batch)))
                    self.next_offset[topic.name] = base + count
                parts.append(R.TopicProduceResponse.PartitionProduceResponse(
                    index=part.index, error_code=0, base_offset=base, log_append_time_ms=-1,
                    log_start_offset=0, record_errors=[], error_message=None))
            responses.append(R.TopicProduceResponse(name=topic.name, partition_responses=parts))
        return R(version=version, responses=responses, throttle_time_ms=0)

    def _fetch(self, request, version: int):
        R = FetchResponse
        topics = []
        has_data = False
        for topic in request.topics:
            parts = []
            for part in topic.partitions:
                with self.lock:
                    log = list(self.logs.get(topic.topic, []))
                    end = self.next_offset.get(topic.topic, 0)
                error = 1 if part.fetch_offset > end else 0         # OFFSET_OUT_OF_RANGE
                records = b"".join(b for base, b in log if base >= part.fetch_offset) \
                    if not error else b""
                has_data = has_data or bool(records)
                parts.append(R.FetchableTopicResponse.PartitionData(
                    partition_index=part.partition, error_code=error, high_watermark=end,
                    last_stable_offset=end, log_start_offset=0, aborted_transactions=[],
                    preferred_read_replica=-1, records=records))
            topics.append(R.FetchableTopicResponse(topic=topic.topic, partitions=parts))
        if not has_data:
            time.sleep(min(request.max_wait_ms, 200) / 1000)
        return R(version=version, throttle_time_ms=0, error_code=0, session_id=0,
                 responses=topics)

    def _list_offsets(self, request, version: int):
        R = ListOffsetsResponse
        topics = []
        for topic in request.topics:
            parts = []
            for part in topic.partitions:
                with self.lock:
                    end = self.next_offset.get(topic.name, 0)
                offset = 0 if part.timestamp == -2 else end
                parts.append(R.ListOffsetsTopicResponse.ListOffsetsPartitionResponse(
                    partition_index=part.partition_index, error_code=0, timestamp=-1,
                    offset=offset, leader_epoch=0))
            topics.append(R.ListOffsetsTopicResponse(name=topic.name, partitions=parts))
        return R(version=version, throttle_time_ms=0, topics=topics)


def _recv(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            more = conn.recv(n - len(data))
        except OSError:
            return None
        if not more:
            return None
        data += more
    return data


def _framed(response, cid: int) -> bytes:
    response.with_header(correlation_id=cid)
    return bytes(response.encode(header=True, framed=True))


def traffic(port: int) -> None:
    bootstrap = f"127.0.0.1:{port}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="shark-producer", acks=1,
                             linger_ms=0, enable_idempotence=False)
    for n in range(3):
        producer.send("orders", key=b"order-%d" % n, value=b'{"id": %d}' % n).get(timeout=10)
    producer.send("payments", value=b'{"amount": 42}').get(timeout=10)
    producer.close()

    fire_and_forget = KafkaProducer(bootstrap_servers=bootstrap, client_id="shark-acks0",
                                    acks=0, linger_ms=0, enable_idempotence=False)
    fire_and_forget.send("orders", value=b'{"id": 99}')
    fire_and_forget.flush()
    time.sleep(0.2)
    fire_and_forget.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="shark-consumer",
                             group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    partition = TopicPartition("orders", 0)
    consumer.assign([partition])
    consumer.seek(partition, 100)                 # past the end: OFFSET_OUT_OF_RANGE, reset
    got: list = []
    deadline = time.monotonic() + 15
    while len(got) < 4 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    assert len(got) == 4, got

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="shark-admin")
    topics = admin.list_topics()
    admin.close()
    assert {"orders", "payments"} <= set(topics), topics


def main() -> None:
    for name, versions in PROFILES.items():
        port = free_port()
        broker = FakeBroker(port, versions)
        try:
            record(GOLDEN / "kafka" / f"{name}.pcap", f"tcp port {port}", lambda: traffic(port))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
