"""Kafka: requests paired with responses by correlation id; topics for Produce/Fetch/Metadata.

Every message is a 4-byte big-endian size and a body. Each direction has a _Reader (a
StreamReader of worker/dissectors/stream.py: order, gaps, the buffer and its marks) whose parse
keeps the first PARSE_LIMIT bytes of a body (enough for the headers, topic names and the first
partitions) and passes the rest by length itself, so a large Fetch response costs no copy; the
session is a TwoWaySession and gets each message as a _Message.

Request header: api_key int16, api_version int16, correlation_id int32, client_id nullable
string (int16 length), and in flexible versions (header v2, see FLEXIBLE) tagged fields.
Response header: correlation_id, plus tagged fields in flexible versions except for
ApiVersions, whose response header is always v0. A response is parsed with the api key and
version of the request that has its correlation id.

Bodies parsed (where the version allows; compact strings/arrays and tagged fields in flexible
versions): Produce (acks, topics; names up to v12, ids after), Fetch (topics; names up to
v12, ids after), Metadata (requested topics; response topics), ListOffsets (first topic), and
the error codes of the responses of those plus the APIs with a top-level error code. status and response.error_code: the
top-level error code, else the first non-zero partition error, else 0.

A Produce with acks=0 gets no response: it is emitted at once. A response whose correlation
id was never requested (capture started late) is a lone entry with the note "request not
captured". Losses: after a gap or a frame that cannot be a Kafka message, the client side
looks for the next plausible request header (size, known api key, version, client id); the
server side for the correlation id of a waiting request preceded by a plausible size; what
waited for responses lost in a gap is emitted incomplete.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.dissectors.stream import StreamReader, TwoWaySession, chunk_at
from worker.packet import PacketRef

# Final: mypyc folds the ints into the code and keeps the tables and structs in C statics (a
# plain module global is a dict lookup per use, ~130 instructions).
PARSE_LIMIT: Final = 64 * 1024      # body bytes kept for parsing each message
MAX_SIZE: Final = 256 << 20         # a larger size is not a Kafka message
MAX_VERSION: Final = 20
TOPICS_SHOWN: Final = 10

# api key: (name, first flexible version or None); from Apache Kafka's message definitions.
APIS: Final[dict[int, tuple[str, int | None]]] = {
    0: ("Produce", 9), 1: ("Fetch", 12), 2: ("ListOffsets", 6), 3: ("Metadata", 9),
    4: ("LeaderAndIsr", 4), 5: ("StopReplica", 2), 6: ("UpdateMetadata", 6),
    7: ("ControlledShutdown", 3), 8: ("OffsetCommit", 8), 9: ("OffsetFetch", 6),
    10: ("FindCoordinator", 3), 11: ("JoinGroup", 6), 12: ("Heartbeat", 4),
    13: ("LeaveGroup", 4), 14: ("SyncGroup", 4), 15: ("DescribeGroups", 5),
    16: ("ListGroups", 3), 17: ("SaslHandshake", None), 18: ("ApiVersions", 3),
    19: ("CreateTopics", 5), 20: ("DeleteTopics", 4), 21: ("DeleteRecords", 2),
    22: ("InitProducerId", 2), 23: ("OffsetForLeaderEpoch", 4), 24: ("AddPartitionsToTxn", 3),
    25: ("AddOffsetsToTxn", 3), 26: ("EndTxn", 3), 27: ("WriteTxnMarkers", 1),
    28: ("TxnOffsetCommit", 3), 29: ("DescribeAcls", 2), 30: ("CreateAcls", 2),
    31: ("DeleteAcls", 2), 32: ("DescribeConfigs", 4), 33: ("AlterConfigs", 2),
    34: ("AlterReplicaLogDirs", 2), 35: ("DescribeLogDirs", 2), 36: ("SaslAuthenticate", 2),
    37: ("CreatePartitions", 2), 38: ("CreateDelegationToken", 2),
    39: ("RenewDelegationToken", 2), 40: ("ExpireDelegationToken", 2),
    41: ("DescribeDelegationToken", 2), 42: ("DeleteGroups", 2), 43: ("ElectLeaders", 2),
    44: ("IncrementalAlterConfigs", 1), 45: ("AlterPartitionReassignments", 0),
    46: ("ListPartitionReassignments", 0), 47: ("OffsetDelete", None),
    48: ("DescribeClientQuotas", 1), 49: ("AlterClientQuotas", 1),
    50: ("DescribeUserScramCredentials", 0), 51: ("AlterUserScramCredentials", 0),
    52: ("Vote", 0), 53: ("BeginQuorumEpoch", 0), 54: ("EndQuorumEpoch", 0),
    55: ("DescribeQuorum", 0), 56: ("AlterPartition", 0), 57: ("UpdateFeatures", 0),
    58: ("Envelope", 0), 59: ("FetchSnapshot", 0), 60: ("DescribeCluster", 0),
    61: ("DescribeProducers", 0), 62: ("BrokerRegistration", 0), 63: ("BrokerHeartbeat", 0),
    64: ("UnregisterBroker", 0), 65: ("DescribeTransactions", 0), 66: ("ListTransactions", 0),
    67: ("AllocateProducerIds", 0), 68: ("ConsumerGroupHeartbeat", 0),
    69: ("ConsumerGroupDescribe", 0), 70: ("ControllerRegistration", 0),
    71: ("GetTelemetrySubscriptions", 0), 72: ("PushTelemetry", 0),
    73: ("AssignReplicasToDirs", 0), 74: ("ListConfigResources", 0),
    75: ("DescribeTopicPartitions", 0), 76: ("ShareGroupHeartbeat", 0),
    77: ("ShareGroupDescribe", 0), 78: ("ShareFetch", 0), 79: ("ShareAcknowledge", 0),
    80: ("AddRaftVoter", 0), 81: ("RemoveRaftVoter", 0), 82: ("UpdateRaftVoter", 0),
    83: ("InitializeShareGroupState", 0), 84: ("ReadShareGroupState", 0),
    85: ("WriteShareGroupState", 0), 86: ("DeleteShareGroupState", 0),
    87: ("ReadShareGroupStateSummary", 0), 88: ("StreamsGroupHeartbeat", 0),
    89: ("StreamsGroupDescribe", 0), 90: ("DescribeShareGroupOffsets", 0),
    91: ("AlterShareGroupOffsets", 0), 92: ("DeleteShareGroupOffsets", 0),
}
MAX_API_KEY: Final = max(APIS)

# APIs whose response starts with [throttle_time_ms int32 (from version T)] error_code:
# api key -> T (None: no throttle field, the error code comes first).
TOP_LEVEL_ERROR: Final[dict[int, int | None]] = {
    10: 1, 11: 2, 12: 1, 13: 1, 14: 1, 16: 1, 17: None, 18: None, 22: 0, 25: 0, 26: 0,
    36: None, 60: 0,
}

ERRORS: Final[dict[int, str]] = {
    -1: "UNKNOWN_SERVER_ERROR", 0: "NONE", 1: "OFFSET_OUT_OF_RANGE", 2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 4: "INVALID_FETCH_SIZE", 5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 8: "BROKER_NOT_AVAILABLE",
    9: "REPLICA_NOT_AVAILABLE", 10: "MESSAGE_TOO_LARGE", 11: "STALE_CONTROLLER_EPOCH",
    12: "OFFSET_METADATA_TOO_LARGE", 13: "NETWORK_EXCEPTION", 14: "COORDINATOR_LOAD_IN_PROGRESS",
    15: "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR", 17: "INVALID_TOPIC_EXCEPTION",
    18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND", 21: "INVALID_REQUIRED_ACKS",
    22: "ILLEGAL_GENERATION", 23: "INCONSISTENT_GROUP_PROTOCOL", 24: "INVALID_GROUP_ID",
    25: "UNKNOWN_MEMBER_ID", 26: "INVALID_SESSION_TIMEOUT", 27: "REBALANCE_IN_PROGRESS",
    28: "INVALID_COMMIT_OFFSET_SIZE", 29: "TOPIC_AUTHORIZATION_FAILED",
    30: "GROUP_AUTHORIZATION_FAILED", 31: "CLUSTER_AUTHORIZATION_FAILED",
    32: "INVALID_TIMESTAMP", 33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE",
    35: "UNSUPPORTED_VERSION", 36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS",
    38: "INVALID_REPLICATION_FACTOR", 39: "INVALID_REPLICA_ASSIGNMENT", 40: "INVALID_CONFIG",
    41: "NOT_CONTROLLER", 42: "INVALID_REQUEST", 43: "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    44: "POLICY_VIOLATION", 45: "OUT_OF_ORDER_SEQUENCE_NUMBER", 46: "DUPLICATE_SEQUENCE_NUMBER",
    47: "INVALID_PRODUCER_EPOCH", 48: "INVALID_TXN_STATE", 49: "INVALID_PRODUCER_ID_MAPPING",
    50: "INVALID_TRANSACTION_TIMEOUT", 51: "CONCURRENT_TRANSACTIONS",
    52: "TRANSACTION_COORDINATOR_FENCED", 53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    54: "SECURITY_DISABLED", 55: "OPERATION_NOT_ATTEMPTED", 56: "KAFKA_STORAGE_ERROR",
    57: "LOG_DIR_NOT_FOUND", 58: "SASL_AUTHENTICATION_FAILED", 59: "UNKNOWN_PRODUCER_ID",
    60: "REASSIGNMENT_IN_PROGRESS", 61: "DELEGATION_TOKEN_AUTH_DISABLED",
    62: "DELEGATION_TOKEN_NOT_FOUND", 63: "DELEGATION_TOKEN_OWNER_MISMATCH",
    64: "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", 65: "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    66: "DELEGATION_TOKEN_EXPIRED", 67: "INVALID_PRINCIPAL_TYPE", 68: "NON_EMPTY_GROUP",
    69: "GROUP_ID_NOT_FOUND", 70: "FETCH_SESSION_ID_NOT_FOUND", 71: "INVALID_FETCH_SESSION_EPOCH",
    72: "LISTENER_NOT_FOUND", 73: "TOPIC_DELETION_DISABLED", 74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH", 76: "UNSUPPORTED_COMPRESSION_TYPE", 77: "STALE_BROKER_EPOCH",
    78: "OFFSET_NOT_AVAILABLE", 79: "MEMBER_ID_REQUIRED", 80: "PREFERRED_LEADER_NOT_AVAILABLE",
    81: "GROUP_MAX_SIZE_REACHED", 82: "FENCED_INSTANCE_ID", 87: "INVALID_RECORD",
    89: "THROTTLING_QUOTA_EXCEEDED", 90: "PRODUCER_FENCED", 100: "UNKNOWN_TOPIC_ID",
}

_I16: Final = struct.Struct(">h").unpack_from
_I32: Final = struct.Struct(">i").unpack_from
_CLIENT_ID_TEXT: Final = re.compile(rb"[\x20-\x7e]*")
_HEADER: Final = struct.Struct(">ihhih")    # size, api_key, api_version, correlation_id, client_id len
# A request header: size < 2**28, a known api key, a version <= 20, any correlation id, and a
# client id length that is -1 or < 2**15 (first bytes only; checked further in _plausible).
_REQUEST_RE: Final = re.compile(rb"(?s)\x00[\x00-\x0f]..\x00[\x00-\x5c]\x00[\x00-\x14]....(?:\x00.|\xff\xff)")




def _i16_at(b: bytes, p: int) -> int:
    """The big-endian int16 at b[p] (the caller checked the length). Read by index: compiled,
    a bytes object's index is a direct read, a struct's unpack_from a call making a tuple
    and its ints (~0.7k instructions)."""
    value = b[p] << 8 | b[p + 1]
    return value - 0x10000 if value >= 0x8000 else value


def _i32_at(b: bytes, p: int) -> int:
    """The big-endian int32 at b[p] (the caller checked the length), as _i16_at."""
    value = b[p] << 24 | b[p + 1] << 16 | b[p + 2] << 8 | b[p + 3]
    return value - 0x100000000 if value >= 0x80000000 else value


class _Short(Exception):
    """The kept body ended before the field (a truncated or malformed message)."""


class _Cursor:
    __slots__ = ("b", "p", "flexible")

    def __init__(self, data: bytes, pos: int = 0, flexible: bool = False) -> None:
        self.b = data
        self.p = pos
        self.flexible = flexible

    # Fixed-size fields are read in place (struct, an index), never through a slice.
    def take(self, n: int) -> bytes:
        p = self.p
        if n < 0 or p + n > len(self.b):
            raise _Short
        self.p = p + n
        return self.b[p:p + n]

    def i8(self) -> int:
        p = self.p
        if p >= len(self.b):
            raise _Short
        self.p = p + 1
        return self.b[p]

    def i16(self) -> int:
        p = self.p
        if p + 2 > len(self.b):
            raise _Short
        self.p = p + 2
        return _i16_at(self.b, p)

    def i32(self) -> int:
        p = self.p
        if p + 4 > len(self.b):
            raise _Short
        self.p = p + 4
        return _i32_at(self.b, p)

    def skip(self, n: int) -> None:
        p = self.p
        if n < 0 or p + n > len(self.b):
            raise _Short
        self.p = p + n

    def uvarint(self) -> int:
        b, p = self.b, self.p
        n = len(b)
        shift = value = 0
        while True:
            if p >= n:
                self.p = p
                raise _Short
            byte = b[p]
            p += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.p = p
                return value
            shift += 7
            if shift > 35:
                self.p = p
                raise _Short

    def string(self) -> str | None:
        """A (nullable) string: compact in flexible versions."""
        if self.flexible:
            n = self.uvarint() - 1
        else:
            n = self.i16()
        if n < 0:
            return None
        return self.take(n).decode("utf-8", "replace")

    def array(self) -> int:
        """An array length (-1: null)."""
        if self.flexible:
            return self.uvarint() - 1
        return self.i32()

    def bytes_(self) -> int:
        """Skip a (nullable) bytes/records field; returns its length."""
        n = self.uvarint() - 1 if self.flexible else self.i32()
        if n > 0:
            self.skip(n)
        return n

    def tags(self) -> None:
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()
                self.skip(self.uvarint())


def _first_flexible(api_key: int) -> int:
    """The api's first flexible version; past any int16 version when it has none or the key
    is unknown."""
    first = APIS.get(api_key, ("", None))[1]
    return 1 << 16 if first is None else first


# APIS by api key, as lists (an index, not a dict lookup of a boxed key and a tuple made
# for its default: ~0.6k instructions a call): a key's name ("" when unknown) and its first
# flexible version (_first_flexible).
_NAMES: Final[list[str]] = [APIS[key][0] if key in APIS else ""
                            for key in range(MAX_API_KEY + 1)]
_FIRST_FLEXIBLE: Final[list[int]] = [_first_flexible(key) for key in range(MAX_API_KEY + 1)]


def _flexible(api_key: int, version: int) -> bool:
    return 0 <= api_key <= MAX_API_KEY and version >= _FIRST_FLEXIBLE[api_key]


def api_name(api_key: int) -> str:
    if 0 <= api_key <= MAX_API_KEY:
        name: str = _NAMES[api_key]
        if name:
            return name
    return f"api-{api_key}"


# -- detection ---------------------------------------------------------------------------

def _plausible(data: bytes | bytearray, p: int = 0) -> Detect:
    """Whether data[p:] begins with a request header (MORE: a prefix that may be one)."""
    if len(data) - p < 14:
        head = data[p:p + 14]
        if len(head) >= 4 and not 10 <= int.from_bytes(head[:4], "big") <= MAX_SIZE:
            return Detect.NO
        if len(head) >= 6 and int.from_bytes(head[4:6], "big") > MAX_API_KEY:
            return Detect.NO
        if len(head) >= 8 and int.from_bytes(head[6:8], "big") > MAX_VERSION:
            return Detect.NO
        return Detect.MORE
    size, key, version, _, cid_len = _HEADER.unpack_from(data, p)     # (in place: no slice)
    if not 10 <= size <= MAX_SIZE or not 0 <= key <= MAX_API_KEY or key not in APIS \
            or not 0 <= version <= MAX_VERSION or cid_len < -1 or 10 + cid_len > size:
        return Detect.NO
    if cid_len > 0:
        shown = min(cid_len, 64)
        cid = data[p + 14:p + 14 + shown]
        if _CLIENT_ID_TEXT.fullmatch(cid) is None:
            return Detect.NO
        if len(cid) < min(cid_len, 64):
            return Detect.MORE
    return Detect.MATCH


def find_request(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """The position of the next plausible request header at or after start, or -1."""
    end = len(data) if end is None else end
    for m in _REQUEST_RE.finditer(data, start, end):
        if _plausible(data, m.start()) is Detect.MATCH:
            return m.start()
    return -1


def detect(client: bytes, server: bytes) -> Detect:
    if client:
        first = _plausible(client)
        if first is not Detect.NO:
            return first
        # Picked up mid-stream: two consecutive plausible requests later in the window.
        p = find_request(client, 1, 8192)
        while p >= 0:
            nxt = p + 4 + int.from_bytes(client[p:p + 4], "big")
            if nxt <= len(client) and _plausible(client, nxt) is Detect.MATCH:
                return Detect.MATCH
            p = find_request(client, p + 1, 8192)
        return Detect.NO
    # Only the server spoke (nothing from the client yet): wait while it could be a response.
    if len(server) >= 4 and not 4 <= int.from_bytes(server[:4], "big") <= MAX_SIZE:
        return Detect.NO
    return Detect.MORE if len(server) < 64 else Detect.NO


# -- bodies --------------------------------------------------------------------------------

def _topics_list(c: _Cursor, count: int, by_id: bool, fetch: bool, version: int) -> list[str]:
    """The topics of a Produce request (fetch False) or a Fetch request of `version`."""
    names: list[str] = []
    try:
        for _ in range(max(0, count)):
            if by_id:
                name = c.take(16).hex()
            else:
                name = c.string() or ""
            if len(names) < TOPICS_SHOWN:
                names.append(name)
            # (called directly, compiled: a callable passed in was a call with its
            # arguments boxed, ~1k instructions a topic)
            if fetch:
                _skip_fetch_partitions(c, version)
            else:
                _skip_produce_partitions(c)
    except _Short:
        if not names:
            raise
    return names                    # what was read when the message is cut


def _skip_produce_partitions(c: _Cursor) -> None:
    for _ in range(max(0, c.array())):
        c.skip(4)
        c.bytes_()
        c.tags()
    c.tags()


def _skip_fetch_partitions(c: _Cursor, version: int) -> None:
    for _ in range(max(0, c.array())):
        c.skip(4)                              # partition
        if version >= 9:
            c.skip(4)                          # current_leader_epoch
        c.skip(8)                              # fetch_offset
        if version >= 12:
            c.skip(4)                          # last_fetched_epoch
        if version >= 5:
            c.skip(8)                          # log_start_offset
        c.skip(4)                              # partition_max_bytes
        c.tags()
    c.tags()


def parse_request(api_key: int, version: int, c: _Cursor) -> dict[str, Any]:
    """Fields of the request body at the cursor (may raise _Short); the cursor's `flexible`
    is _flexible(api_key, version)."""
    out: dict[str, Any] = {}
    if api_key == 0:                                       # Produce
        if version >= 3:
            c.string()                                     # transactional_id
        out["acks"] = c.i16()
        c.skip(4)                                          # timeout_ms
        by_id = version >= 13
        out["topics"] = _topics_list(c, c.array(), by_id, False, version)
    elif api_key == 1:                                     # Fetch
        if version <= 14:
            c.skip(4)                                      # replica_id
        c.skip(8)                                          # max_wait_ms, min_bytes
        if version >= 3:
            c.skip(4)                                      # max_bytes
        if version >= 4:
            c.skip(1)                                      # isolation_level
        if version >= 7:
            c.skip(8)                                      # session_id, session_epoch
        out["topics"] = _topics_list(c, c.array(), version >= 13, True, version)
    elif api_key == 2:                                     # ListOffsets: first topic only
        c.skip(4)                                          # replica_id
        if version >= 2:
            c.skip(1)                                      # isolation_level
        count = c.array()
        out["topics"] = [c.string() or ""] if count > 0 else []
    elif api_key == 3:                                     # Metadata
        count = c.array()
        if count < 0 or (count == 0 and version == 0):
            out["topics"] = None                           # all topics
        else:
            names: list[str] = []
            for _ in range(count):
                if version >= 10:
                    c.skip(16)                             # topic_id
                name = c.string()
                if name is not None and len(names) < TOPICS_SHOWN:
                    names.append(name)
                c.tags()
            out["topics"] = names
    return out


def parse_response(api_key: int, version: int, c: _Cursor) -> dict[str, Any]:
    """throttle_time_ms, error_code (top-level or first partition error) and topics, of the
    body at the cursor; the cursor's `flexible` is _flexible(api_key, version)."""
    out: dict[str, Any] = {}
    if api_key in TOP_LEVEL_ERROR:
        throttle_from = TOP_LEVEL_ERROR[api_key]
        if api_key == 10 and version >= 4:                  # FindCoordinator: coordinators[]
            out["throttle_time_ms"] = c.i32()
            if c.array() > 0:
                c.string()
                c.skip(4)
                c.string()
                c.skip(4)
                out["error_code"] = c.i16()
            return out
        if throttle_from is not None and version >= throttle_from:
            out["throttle_time_ms"] = c.i32()
        out["error_code"] = c.i16()
        return out
    if api_key == 0:                                       # Produce
        first_error = 0         # the first non-zero partition error
        topics: list[str] = []
        for _ in range(max(0, c.array())):
            name = c.take(16).hex() if version >= 13 else (c.string() or "")
            if len(topics) < TOPICS_SHOWN:
                topics.append(name)
            for _ in range(max(0, c.array())):
                c.skip(4)
                error = c.i16()
                if not first_error:
                    first_error = error
                c.skip(8)                                  # base_offset
                if version >= 2:
                    c.skip(8)                              # log_append_time_ms
                if version >= 5:
                    c.skip(8)                              # log_start_offset
                if version >= 8:
                    for _ in range(max(0, c.array())):     # record_errors
                        c.skip(4)
                        c.string()
                        c.tags()
                    c.string()                             # error_message
                c.tags()                                   # current_leader (v10+)
            c.tags()
        out["topics"] = topics
        out["error_code"] = first_error
        if version >= 1:
            try:
                out["throttle_time_ms"] = c.i32()
            except _Short:
                pass
        return out
    if api_key == 1:                                       # Fetch
        if version >= 1:
            out["throttle_time_ms"] = c.i32()
        top = 0
        if version >= 7:
            top = c.i16()
            c.skip(4)                                      # session_id
        out["error_code"] = top
        topics = []
        first_error = 0
        try:
            for _ in range(max(0, c.array())):
                name = c.take(16).hex() if version >= 13 else (c.string() or "")
                if len(topics) < TOPICS_SHOWN:
                    topics.append(name)
                for _ in range(max(0, c.array())):
                    c.skip(4)
                    error = c.i16()
                    first_error = first_error or error
                    c.skip(8)                              # high_watermark
                    if version >= 4:
                        c.skip(8)                          # last_stable_offset
                    if version >= 5:
                        c.skip(8)                          # log_start_offset
                    if version >= 4:
                        for _ in range(max(0, c.array())):  # aborted transactions
                            c.skip(16)
                            c.tags()
                    if version >= 11:
                        c.skip(4)                          # preferred_read_replica
                    c.bytes_()                             # records
                    c.tags()
                c.tags()
        except _Short:
            pass                                           # records beyond what was kept
        out["topics"] = topics
        out["error_code"] = top or first_error
        return out
    if api_key == 2:                                       # ListOffsets: first partition
        if version >= 2:
            out["throttle_time_ms"] = c.i32()
        out["error_code"] = 0
        if c.array() > 0:
            out["topics"] = [c.string() or ""]
            if c.array() > 0:
                c.skip(4)
                out["error_code"] = c.i16()
        return out
    if api_key == 3:                                       # Metadata
        if version >= 3:
            out["throttle_time_ms"] = c.i32()
        for _ in range(max(0, c.array())):                 # brokers
            c.skip(4)
            c.string()
            c.skip(4)
            if version >= 1:
                c.string()                                 # rack
            c.tags()
        if version >= 2:
            c.string()                                     # cluster_id
        if version >= 1:
            c.skip(4)                                      # controller_id
        topics = []
        first_error = 0
        try:
            for _ in range(max(0, c.array())):
                error = c.i16()
                first_error = first_error or error
                listed = c.string()
                if len(topics) < TOPICS_SHOWN:
                    topics.append(listed or "")
                if version >= 10:
                    c.skip(16)
                if version >= 1:
                    c.skip(1)                              # is_internal
                for _ in range(max(0, c.array())):         # partitions
                    c.skip(2 + 4 + 4)                      # error, index, leader
                    if version >= 7:
                        c.skip(4)                          # leader_epoch
                    for _ in range(3 if version >= 5 else 2):
                        c.skip(4 * max(0, c.array()))      # replicas, isr, offline
                    c.tags()
                if version >= 8:
                    c.skip(4)                              # topic_authorized_operations
                c.tags()
        except _Short:
            pass
        out["topics"] = topics
        out["error_code"] = first_error
        return out
    return out


# -- one direction -----------------------------------------------------------------------

class _Message:
    """One message as a reader cut it: its kept body, where it is in its direction's stream
    (start, end: its size field's first byte and past its last) and the time and packet of
    its first and last bytes; `cut` when it ended early (a gap, the connection's end).
    stream.Frame and Span's fields in one compiled class: the session reads them directly
    (a Struct's attribute was a generic lookup, ~250 instructions each, a dozen a row)."""

    __slots__ = ("body", "start", "end", "size", "first_ts", "first_ref", "last_ts",
                 "last_ref", "cut")

    def __init__(self, body: bytes, start: int, end: int, first_ts: int, first_ref: PacketRef,
                 last_ts: int, last_ref: PacketRef, cut: bool = False) -> None:
        self.body = body
        self.start = start
        self.end = end
        self.size = end - start         # on the wire, its size field included
        self.first_ts = first_ts
        self.first_ref = first_ref
        self.last_ts = last_ts
        self.last_ref = last_ref
        self.cut = cut


class _Reader(StreamReader):
    """Cuts one direction into messages (_Message), each passed to the session's on_request
    or on_response.
    What the base buffers is only an unfinished size field, or while resyncing a tail that
    may begin a message; a body is passed by length and its first `keep` bytes kept."""

    __slots__ = ("s", "is_request", "keep", "resyncing", "open", "head", "left",
                 "known_id")

    def __init__(self, session: KafkaSession, direction: Direction, keep: int) -> None:
        super().__init__(direction)
        self.s = session
        # Its messages go to the session's on_request, else its on_response (called directly,
        # compiled: a bound method's call boxed its arguments, ~0.5k instructions a message).
        self.is_request = direction == Direction.CLIENT_TO_SERVER
        self.keep = keep
        self.resyncing = False
        # The message whose body is still coming: (start, size, first_ts, first_ref), the
        # body bytes kept so far and how many are still to come.
        self.open: tuple[int, int, int, PacketRef] | None = None
        self.head = bytearray()
        self.left = 0
        self.known_id = b""     # the last request's client id that passed _plausible

    def parse(self, work: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        pos, n = 0, len(work)
        keep = self.keep
        is_request = self.is_request
        chunk_start = self.marks[-1][0]      # work from here on came in (ts, ref)
        # work as bytes (a packet's payload parsed in place, the common case): read by index
        # and sliced directly, compiled; a buffer (bytearray) through struct and bytes().
        data = work if isinstance(work, bytes) else None
        try:
            while pos < n:
                if self.open is not None:        # the body of a message begun earlier
                    take = min(self.left, n - pos)
                    head = self.head
                    room = keep - len(head)
                    if room > 0:
                        head += work[pos:pos + min(take, room)]
                    pos += take
                    self.left -= take
                    if not self.left:
                        start, size, first_ts, first_ref = self.open
                        self.open = None
                        self.head = bytearray()
                        self._deliver(_Message(bytes(head), start, start + 4 + size,
                                               first_ts, first_ref, ts, ref), None)
                    continue
                if self.resyncing:
                    found = self._find(work, pos)
                    if found < 0:
                        tail = max(pos, n - 32)     # may hold the start of the next one
                        self.skipped += tail - pos
                        return tail
                    self.skipped += found - pos
                    pos = found
                    self.resyncing = False
                if n - pos < 4:
                    return pos
                size = _i32_at(data, pos) if data is not None else _I32(work, pos)[0]
                if not ((size >= 10 and self._plausible_request(work, pos)) if is_request
                        else 4 <= size <= MAX_SIZE):
                    self.resyncing = True
                    self.s.on_loss(is_request, f"malformed: size {size} or header not Kafka")
                    pos += 1
                    continue
                start = base + pos
                if start >= chunk_start:
                    first_ts, first_ref = ts, ref
                else:
                    _, first_ts, first_ref = chunk_at(self.marks, start)
                end = pos + 4 + size
                if end <= n:                     # whole: its body cut from work, no state
                    cut_at = min(end, pos + 4 + keep)
                    body = data[pos + 4:cut_at] if data is not None else \
                        bytes(work[pos + 4:cut_at])
                    self._deliver(_Message(body, start, base + end, first_ts, first_ref, ts,
                                           ref), None)
                    pos = end
                    continue
                self.open = (start, size, first_ts, first_ref)
                self.head = bytearray(work[pos + 4:min(n, pos + 4 + keep)])
                self.left = size - (n - pos - 4)
                return n
            return n
        except (ValueError, IndexError, OverflowError) as exc:   # defensive: never raise
            self.open = None
            self.head = bytearray()
            self.left = 0
            self.resyncing = True
            self.s.on_loss(is_request, f"malformed: {type(exc).__name__}")
            return n

    def _plausible_request(self, work: bytes | bytearray, pos: int) -> bool:
        """_plausible(work, pos) is not NO; the client id of a whole header that passed (a
        MATCH) is remembered: the next requests' is compared, not matched again. _plausible's
        checks inline for a whole header, its fields typed (compared as ints, not objects),
        the client id cut once (~7k instructions a request through _plausible)."""
        if len(work) - pos < 14:
            return _plausible(work, pos) is not Detect.NO
        # The header and the client id's first 64 bytes as bytes, read by index (copied only
        # from a reader's buffer).
        if isinstance(work, bytes):
            data, at = work, pos
        else:
            data, at = bytes(work[pos:pos + 78]), 0
        size = _i32_at(data, at)
        key = _i16_at(data, at + 4)
        version = _i16_at(data, at + 6)
        cid_len = _i16_at(data, at + 12)
        if not 10 <= size <= MAX_SIZE or not 0 <= key <= MAX_API_KEY or key not in APIS \
                or not 0 <= version <= MAX_VERSION or cid_len < -1 or 10 + cid_len > size:
            return False
        if cid_len <= 0:
            return True
        shown = min(cid_len, 64)
        cid = data[at + 14:at + 14 + shown]
        if cid == self.known_id:
            return True     # (shorter than shown: a prefix of a printable id, MORE)
        if _CLIENT_ID_TEXT.fullmatch(cid) is None:
            return False
        if len(cid) == shown:       # MATCH (shorter: MORE, not remembered)
            self.known_id = cid
        return True

    def _find(self, data: bytes | bytearray, pos: int) -> int:
        if self.is_request:
            return find_request(data, pos)
        # A response to a waiting request: its correlation id after a plausible size.
        best = -1
        for cid in self.s.waiting_ids():
            needle = cid.to_bytes(4, "big", signed=True)
            at = data.find(needle, pos + 4)
            while at >= 0:
                size = int.from_bytes(data[at - 4:at], "big", signed=True)
                if 4 <= size <= MAX_SIZE:
                    if best < 0 or at - 4 < best:
                        best = at - 4
                    break
                at = data.find(needle, at + 1)
        return best

    def _cut(self, note: str) -> None:
        """Deliver the message whose body is still coming, as far as it came."""
        opened = self.open
        if opened is None:
            return
        start, size, first_ts, first_ref = opened
        head = self.head
        self.open = None
        self.head = bytearray()
        self.left = 0
        self._deliver(_Message(bytes(head), start, start + 4 + size, first_ts, first_ref,
                               self.last_ts, self.last_ref, True), note)

    def _deliver(self, message: _Message, note: str | None) -> None:
        """To the session's on_request or on_response (native calls, compiled)."""
        if self.is_request:
            self.s.on_request(message, note)
        else:
            self.s.on_response(message, note)

    def lose(self, offset: int, end: int, ts: int) -> None:
        side = "request" if self.is_request else "response"
        self._cut(f"gap in {side}")
        self.resyncing = True
        self.s.on_loss(self.is_request, f"{side} lost in a gap")

    def close(self) -> None:
        if not self.dead:
            side = "request" if self.is_request else "response"
            self._cut(f"{side} cut by the end of the connection")
        super().close()

    def held_bytes(self) -> int:
        """An unfinished size field or resync tail, and the kept body of an open message."""
        return len(self.buf) + len(self.head)


# -- the session -------------------------------------------------------------------------


class _Request:
    __slots__ = ("frame", "fields", "api_key", "version", "cid", "notes")

    def __init__(self, frame: _Message, fields: dict[str, Any], notes: list[str]) -> None:
        self.frame = frame
        self.fields = fields
        self.api_key = fields["api_key"]
        self.version = fields["api_version"]
        self.cid = fields["correlation_id"]
        self.notes = notes


class KafkaSession(TwoWaySession[_Reader]):
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> None:
        keep = max(PARSE_LIMIT, body_limit)
        super().__init__(_Reader(self, Direction.CLIENT_TO_SERVER, keep),
                         _Reader(self, Direction.SERVER_TO_CLIENT, keep))
        self.flow = flow
        self.emit = emit
        self.body_limit = body_limit
        self.waiting: dict[int, _Request] = {}      # correlation id -> request, in order
        # The last client id's bytes and text (a connection's requests all carry the same).
        self.client_id_bytes = b""
        self.client_id_text = ""

    def waiting_ids(self) -> list[int]:
        return list(self.waiting)[:16]

    def kept_bytes(self) -> int:
        """The kept bodies of the requests waiting for their response."""
        return sum(len(request.frame.body) for request in self.waiting.values())

    def on_close(self, ts_ns: int) -> None:
        if self.dead:
            return
        self.dead = True
        self.client.close()
        self.server.close()
        for request in list(self.waiting.values()):
            request.notes.append("no response")
            self._emit(request, None, complete=False)
        self.waiting.clear()

    def _client_id(self, raw: bytes) -> str:
        """A request's client id as text: the last one's when its bytes are the same (a
        comparison, not a decoding per request)."""
        if raw != self.client_id_bytes:
            self.client_id_bytes = raw
            self.client_id_text = raw.decode("utf-8", "replace")
        return self.client_id_text

    # -- called by the readers --

    def on_request(self, frame: _Message, cut: str | None) -> None:
        body = frame.body
        notes = [cut] if cut else []
        if len(body) < 10:
            return                                 # not even a header: nothing to show
        api_key = _i16_at(body, 0)
        version = _i16_at(body, 2)
        cid = _i32_at(body, 4)
        cid_len = _i16_at(body, 8)
        pos = 10
        client_id: str | None = None
        if cid_len >= 0:
            client_id = self._client_id(body[pos:pos + cid_len])
            pos += cid_len
        fields: dict[str, Any] = {
            "api_key": api_key, "api": api_name(api_key), "api_version": version,
            "correlation_id": cid, "client_id": client_id, "topic": None, "topics": None,
        }
        try:
            # One cursor for the header's tagged fields and the body.
            c = _Cursor(body, pos, _flexible(api_key, version))
            c.tags()                                  # request header v2 (flexible): tags
            fields.update(parse_request(api_key, version, c))
        except _Short:
            if not frame.cut and len(body) == frame.size - 4:
                notes.append("malformed: request body shorter than its fields")
        topics = fields.get("topics")
        if topics:
            fields["topic"] = topics[0]
        request = _Request(frame, fields, notes)
        if api_key == 0 and fields.get("acks") == 0:
            self._emit(request, None, complete=not frame.cut)   # acks=0: no response comes
            return
        if frame.cut:
            self._emit(request, None, complete=False)
            return
        old = self.waiting.pop(cid, None)
        if old is not None:
            old.notes.append("no response (correlation id reused)")
            self._emit(old, None, complete=False)
        self.waiting[cid] = request

    def on_response(self, frame: _Message, cut: str | None) -> None:
        body = frame.body
        if len(body) < 4:
            return
        cid = _i32_at(body, 0)
        request = self.waiting.pop(cid, None)
        notes = [cut] if cut else []
        fields: dict[str, Any] = {"correlation_id": cid, "error_code": None, "error": None}
        if request is None:
            notes.append("request not captured")
            ex = Exchange(protocol="kafka", start_ns=frame.first_ts, end_ns=frame.last_ts,
                          summary=f"response {cid} (request not captured)", request={},
                          response=fields, response_size=frame.size,
                          complete=not frame.cut, first_ref=frame.first_ref,
                          last_ref=frame.last_ref, client_offset=self.client.expected,
                          server_offset=frame.start, notes=notes)
            if self.body_limit:
                ex.response_body = self._raw(frame)
            self.emit(ex)
            return
        api_key, version = request.api_key, request.version
        try:
            # One cursor for the header's tagged fields and the body.
            c = _Cursor(body, 4, _flexible(api_key, version))
            if api_key != 18:                             # ApiVersions: header v0
                c.tags()                                  # (none unless flexible)
            fields.update(parse_response(api_key, version, c))
        except _Short:
            if not frame.cut and len(body) == frame.size - 4:
                notes.append("malformed: response body shorter than its fields")
        code = fields.get("error_code")
        if code:
            fields["error"] = ERRORS.get(code, f"error {code}")
        request.notes += notes
        self._emit(request, frame, complete=not frame.cut and not request.frame.cut,
                   response=fields)

    def on_loss(self, is_request: bool, why: str) -> None:
        if is_request:
            return          # responses of lost requests come back as lone entries
        for request in list(self.waiting.values()):
            if request.frame.last_ts <= self.server.last_ts:
                request.notes.append("response lost in a gap" if "gap" in why else why)
                self._emit(request, None, complete=False)
                del self.waiting[request.cid]

    def _raw(self, frame: _Message) -> bytes:
        """The message's first body_limit bytes as on the wire (at least its size field)."""
        return (frame.size - 4).to_bytes(4, "big") + frame.body[:max(0, self.body_limit - 4)]

    def _emit(self, request: _Request, frame_r: _Message | None, complete: bool,
              response: dict[str, Any] | None = None) -> None:
        frame = request.frame
        fields = request.fields
        # Typed (a str's slice and concatenation, a list's index: direct calls, compiled)
        summary: str = fields["api"]
        topics: list[str] | None = fields.get("topics")
        if topics:
            if len(topics) == 1:        # (most: one topic, no join)
                summary += " " + topics[0]
            else:
                summary += " " + ", ".join(topics[:3]) + (" ..." if len(topics) > 3 else "")
        ex = Exchange(protocol="kafka", start_ns=frame.first_ts, end_ns=None,
                      summary=summary[:256], request=fields, response=None,
                      request_size=frame.size, complete=complete, first_ref=frame.first_ref,
                      last_ref=frame.last_ref, client_offset=frame.start,
                      notes=list(request.notes))
        if fields.get("acks") == 0 and fields["api_key"] == 0:
            ex.notes.append("acks=0: no response expected")
        if self.body_limit:
            ex.request_body = self._raw(request.frame)
        if frame_r is not None and response is not None:
            ex.response = response
            ex.status = response.get("error_code")
            ex.end_ns = frame_r.last_ts
            ex.last_ref = frame_r.last_ref
            ex.server_offset = frame_r.start
            ex.response_size = frame_r.size
            if self.body_limit:
                ex.response_body = self._raw(frame_r)
        self.emit(ex)


class KafkaDissector:
    name = "kafka"
    transports = frozenset({"tcp"})
    ports = frozenset({9092, 9093, 9094, 29092})
    client_first = True         # a request

    def detect(self, client: bytes, server: bytes) -> Detect:
        return detect(client, server)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> KafkaSession:
        return KafkaSession(flow, emit, body_limit)
