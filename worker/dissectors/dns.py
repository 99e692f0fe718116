"""DNS over UDP (one message per datagram) and TCP (2-byte length prefix, several messages per
connection, RFC 7766): queries paired with their responses by message id within the flow.

The parser is our own (no dpkt): bounded work per message, every malformation becomes a
`Malformed` with a reason, never another exception. Names follow compression pointers with a
hop limit and the 255-byte name limit, so a pointer loop ends; label bytes outside printable
ASCII are shown as dig shows them (\\DDD).

Pairing: a query waits in `pending` (by id, oldest first); a response takes the oldest query
with its id. A query nobody answers is emitted with response None and complete=False when the
flow closes, when it has waited QUERY_TIMEOUT_NS (capture time) or when more than MAX_PENDING
queries wait. A response without a query (capture started late, or the query was lost) is an
entry too, its request filled from the response's question section.

TCP: each direction is read as length-prefixed frames. A gap loses the framing; the reader
then looks for the next position where a length prefix is followed by a message that parses
to exactly that length (or a plausible header when the frame is not complete yet).
"""

from __future__ import annotations

import re
import socket
from collections import deque
from struct import Struct
from typing import Any, Final

import msgspec

from shark.model import ENCODER
from worker.dissectors.base import Detect, Direction, Emit, Exchange, FlowInfo
from worker.packet import PacketRef
from worker.dissectors.stream import Span, StreamReader

# Final: mypyc folds the ints into the code and keeps the tables in C statics; a plain module
# global is a dict lookup by name at every use.
MAX_ANSWERS: Final = 50                      # answers listed per response (the count is exact)
MAX_PENDING: Final = 1024                    # queries waiting for an answer, per flow
QUERY_TIMEOUT_NS: Final = 10_000_000_000     # a query unanswered this long is emitted as such
RDATA_HEX_LIMIT: Final = 64                  # bytes of unknown rdata shown (as hex)
TEXT_LIMIT: Final = 1000                     # characters of TXT data shown
RESYNC_SCAN_LIMIT: Final = 4096              # positions tried per TCP chunk while resyncing

TYPES: Final = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 36: "KX",
    37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY",
    46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM",
    52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY",
    62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF", 249: "TKEY", 250: "TSIG",
    251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI", 257: "CAA",
}
CLASSES: Final = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
RCODES: Final = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI",
    16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG",
    22: "BADTRUNC", 23: "BADCOOKIE",
}
OPCODES: Final = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
_NAME_TYPES: Final = frozenset({2, 3, 4, 5, 7, 8, 9, 12, 39})   # rdata is one domain name
_OPT: Final = 41
_MAX_HOPS: Final = 64
_HEADER: Final = Struct("!6H")        # id, flags, qdcount, ancount, nscount, arcount
_NEEDS_ESCAPE: Final = re.compile(rb"[^\x21-\x7e]|[\\\"();]")   # "." is checked apart
_PRINTABLE_LABEL: Final = re.compile(rb"[\x21-\x7e]+")


# Names without compression pointers by their wire bytes (labels and root): what read_name made
# of them, at most NAME_CACHE_SIZE (then emptied: a bound, not an LRU). A name's text depends
# on those bytes alone, and in a node's traffic the same few hundred names come again and again
# (a response repeats its query's question); 4096 names with their keys are a few hundred KB.
NAME_CACHE_SIZE: Final = 4096
_NAMES: Final[dict[bytes, str]] = {}
# The decimal text of each byte value (an A record's octets).
_OCTETS: Final[tuple[str, ...]] = tuple(str(i) for i in range(256))


class Malformed(Exception):
    """A message that cannot be read as DNS; the text says why."""


def type_name(value: int) -> str:
    return TYPES.get(value) or f"TYPE{value}"


def class_name(value: int) -> str:
    return CLASSES.get(value) or f"CLASS{value}"


def rcode_name(value: int) -> str:
    return RCODES.get(value) or f"RCODE{value}"


def _escape_label(label: bytes) -> str:
    if _NEEDS_ESCAPE.search(label) is None and b"." not in label:
        return label.decode("ascii")
    out = []
    for c in label:
        if c in b".\\\"();":
            out.append("\\" + chr(c))
        elif 0x21 <= c <= 0x7E:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    return "".join(out)


def _plain(joined: bytes, labels: int) -> bool:
    """No byte of the labels joined by "." needs escaping (_NEEDS_ESCAPE, or a "." inside a
    label): a native loop under mypyc, where a regex search and a count were ~3k instructions
    a name."""
    dots = 0
    for i in range(len(joined)):
        c = joined[i]
        if c == 0x2E:
            dots += 1
        elif c < 0x21 or c > 0x7E or c == 0x5C or c == 0x22 or c == 0x28 or c == 0x29 \
                or c == 0x3B:
            return False
    return dots == labels - 1


def read_name(buf: bytes, pos: int, memo: dict[int, str] | None = None) -> tuple[str, int]:
    """The (possibly compressed) name at `pos` -> (dotted name, position after it). `memo`
    (one per message) maps positions to the names read from there, so a compression pointer
    to a name already read costs one lookup; a name without pointers is looked up by its wire
    bytes in _NAMES first (a response repeats its query's question; clients ask for the same
    names again and again)."""
    start = pos
    n = len(buf)
    if memo is not None and pos + 1 < n and buf[pos] >= 0xC0:
        # The common case in answers: the whole name is a pointer to one already read.
        known = memo.get(((buf[pos] & 0x3F) << 8) | buf[pos + 1])
        if known is not None:
            memo[start] = known
            return known, pos + 2
    # Where a name of plain labels ends (its root label), if it is one that reads without a
    # fault: then its wire bytes alone make the name.
    key = None
    while pos < n:
        length = buf[pos]
        if not length or length & 0xC0:
            break
        pos += length + 1
    if pos < n and not buf[pos] and pos - start <= 255 and type(buf) is bytes:
        key = buf[start:pos + 1]
        known = _NAMES.get(key)
        if known is not None:
            if memo is not None:
                memo[start] = known
            return known, pos + 1
    pos = start
    labels: list[bytes] = []
    suffix = ""
    end = -1
    hops = total = 0
    while True:
        if pos >= n:
            raise Malformed("name runs past the end of the message")
        length = buf[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise Malformed("name pointer runs past the end of the message")
            if end < 0:
                end = pos + 2
            hops += 1
            if hops > _MAX_HOPS:
                raise Malformed("name compression loop")
            pos = ((length & 0x3F) << 8) | buf[pos + 1]
            if memo is not None and pos in memo:
                suffix = memo[pos]
                break
            continue
        if kind:
            raise Malformed(f"unknown label type 0x{kind:02x}")
        total += length + 1
        if total > 255:
            raise Malformed("name longer than 255 bytes")
        stop = pos + 1 + length
        if stop > n:
            raise Malformed("label runs past the end of the message")
        labels.append(buf[pos + 1:stop])
        pos = stop
    if labels:
        joined = b".".join(labels)
        if _plain(joined, len(labels)):
            name = joined.decode("ascii")
        else:
            name = ".".join(_escape_label(label) for label in labels)
        if suffix and suffix != ".":
            name = f"{name}.{suffix}"
    else:
        name = suffix or "."
    if memo is not None:
        memo[start] = name
    if key is not None:
        if len(_NAMES) >= NAME_CACHE_SIZE:
            _NAMES.clear()
        _NAMES[key] = name
    return name, (end if end >= 0 else pos)


def _character_strings(data: bytes) -> list[str]:
    out = []
    pos, n = 0, len(data)
    while pos < n:
        length = data[pos]
        out.append(data[pos + 1:pos + 1 + length].decode("utf-8", "replace"))
        pos += 1 + length
    return out


def _rdata(buf: bytes, rtype: int, start: int, end: int, memo: dict[int, str]) -> str:
    """The record data in dig's presentation form (unknown types as RFC 3597 hex)."""
    length = end - start
    if rtype == 1 and length == 4:
        # socket.inet_ntoa's text from the octets' texts made once: compiled, four int
        # formattings were ~1.5k of the record's ~2k instructions.
        return f"{_OCTETS[buf[start]]}.{_OCTETS[buf[start + 1]]}.{_OCTETS[buf[start + 2]]}." \
            f"{_OCTETS[buf[start + 3]]}"
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, buf[start:end])
    if rtype in _NAME_TYPES:
        return read_name(buf, start, memo)[0]
    if rtype == 15 and length >= 3:                               # MX
        return f"{int.from_bytes(buf[start:start + 2], 'big')} {read_name(buf, start + 2, memo)[0]}"
    if rtype in (16, 99):                                         # TXT, SPF
        text = " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
                        for s in _character_strings(buf[start:end]))
        return text[:TEXT_LIMIT]
    if rtype == 33 and length >= 7:                               # SRV
        prio, weight, port = (int.from_bytes(buf[i:i + 2], "big") for i in (start, start + 2,
                                                                           start + 4))
        return f"{prio} {weight} {port} {read_name(buf, start + 6, memo)[0]}"
    if rtype == 6:                                                # SOA
        mname, pos = read_name(buf, start, memo)
        rname, pos = read_name(buf, pos, memo)
        if pos + 20 > end:
            raise Malformed("SOA record too short")
        numbers = [int.from_bytes(buf[i:i + 4], "big") for i in range(pos, pos + 20, 4)]
        return " ".join([mname, rname, *map(str, numbers)])
    if rtype == 257 and length >= 2:                              # CAA
        tag_len = buf[start + 1]
        tag = buf[start + 2:start + 2 + tag_len].decode("ascii", "replace")
        value = buf[start + 2 + tag_len:end].decode("utf-8", "replace")
        return f'{buf[start]} {tag} "{value}"'[:TEXT_LIMIT]
    shown = buf[start:min(end, start + RDATA_HEX_LIMIT)].hex()
    return f"\\# {length} {shown}{'...' if length > RDATA_HEX_LIMIT else ''}"


# A Message's record sections until it has records of that kind (see Message.__init__).
_NO_RECORDS: Final[list[dict[str, Any]]] = []


class Message:
    """One parsed DNS message. `error` is set when only a part could be read."""

    __slots__ = ("id", "flags", "qdcount", "ancount", "nscount", "arcount", "qname", "qtype",
                 "qclass", "answers", "authorities", "additionals", "edns", "rcode", "error",
                 "end", "answers_json")

    # The header's fields, set by whoever makes the message (parse, or a header alone).
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    def __init__(self) -> None:
        self.qname = ""
        self.qtype = self.qclass = 0
        # The shared empty list until parse() reads a record of that section (a query has
        # none: three lists per message were made and freed for nothing). Never appended to:
        # parse gives a section a list of its own before reading its records, and a response
        # dict gets a new list for an empty section (_response).
        self.answers: list[dict[str, Any]] = _NO_RECORDS
        self.authorities: list[dict[str, Any]] = _NO_RECORDS
        self.additionals: list[dict[str, Any]] = _NO_RECORDS
        self.edns: int | None = None
        self.rcode = 0
        self.error = ""
        self.end = -1                 # where the last record ends (-1: not read to the end)
        # The answers' JSON (as msgspec encodes the list) when parse made it (_section): one
        # A or AAAA record of class IN, its name needing no escape ("": not made).
        self.answers_json = ""

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def parse(buf: bytes, records: bool = True, keep_all: bool = False,
          rdata: bool = True) -> Message:
    """A whole DNS message. Raises Malformed when even the header or the question cannot be
    read; a fault later (in the records) is kept in `error` with what was read before it.
    rdata=False walks the records without decoding them (detection)."""
    if len(buf) < 12:
        raise Malformed(f"{len(buf)} bytes: shorter than a DNS header")
    if type(buf) is not bytes:
        buf = bytes(buf)
    msg = Message()
    # Indexing a typed bytes is native under mypyc: no Struct call and tuple per message.
    msg.id = buf[0] << 8 | buf[1]
    msg.flags = flags = buf[2] << 8 | buf[3]
    msg.qdcount = qdcount = buf[4] << 8 | buf[5]
    msg.ancount = ancount = buf[6] << 8 | buf[7]
    msg.nscount = nscount = buf[8] << 8 | buf[9]
    msg.arcount = arcount = buf[10] << 8 | buf[11]
    msg.rcode = flags & 0x0F
    pos = 12
    n = len(buf)
    # Positions -> names, for the records' compression pointers: a message without records (a
    # query) reads its question without one (the same names; one dict less per query).
    memo: dict[int, str] | None = {} if records and (ancount or nscount or arcount) else None
    for i in range(qdcount):
        name, pos = read_name(buf, pos, memo)
        if pos + 4 > n:
            raise Malformed("question runs past the end of the message")
        if i == 0:
            msg.qname = name
            msg.qtype = buf[pos] << 8 | buf[pos + 1]
            msg.qclass = buf[pos + 2] << 8 | buf[pos + 3]
        pos += 4
    if not records:
        return msg
    if not (ancount or nscount or arcount):
        msg.end = pos
        return msg
    if memo is None:
        memo = {}
    # Lists of their own for the sections that have records; the others keep _NO_RECORDS
    # and are skipped.
    if ancount:
        msg.answers = []
    if nscount:
        msg.authorities = []
    if arcount:
        msg.additionals = []
    try:
        # A call per section with records, not a loop over a tuple of (section, count)
        # tuples (compiled: three tuples, an iterator and the unpacking per response).
        if ancount:
            pos = _section(msg, buf, pos, ancount, msg.answers, MAX_ANSWERS if rdata else 0,
                           memo, False)
        if nscount:
            pos = _section(msg, buf, pos, nscount, msg.authorities,
                           MAX_ANSWERS if keep_all and rdata else 0, memo, False)
        if arcount:
            pos = _section(msg, buf, pos, arcount, msg.additionals,
                           MAX_ANSWERS if keep_all and rdata else 0, memo, True)
        msg.end = pos
    except Malformed as exc:
        msg.error = str(exc)
    except (IndexError, ValueError, OSError):
        msg.error = "record data does not fit its type"
    return msg


def _section(msg: Message, buf: bytes, pos: int, count: int, section: list[dict[str, Any]],
             keep: int, memo: dict[int, str], additional: bool) -> int:
    """The `count` records of one section from `pos`: the first `keep` listed in `section`,
    an OPT in the additional section read into msg.edns and msg.rcode. Returns where they
    end; raises Malformed (parse keeps what was read before)."""
    n = len(buf)
    for _ in range(count):
        name, pos = read_name(buf, pos, memo)
        if pos + 10 > n:
            raise Malformed("record runs past the end of the message")
        rtype = buf[pos] << 8 | buf[pos + 1]
        rclass = buf[pos + 2] << 8 | buf[pos + 3]
        ttl = buf[pos + 4] << 24 | buf[pos + 5] << 16 | buf[pos + 6] << 8 | buf[pos + 7]
        rdlength = buf[pos + 8] << 8 | buf[pos + 9]
        start = pos + 10
        pos = start + rdlength
        if pos > n:
            raise Malformed("record data runs past the end of the message")
        if rtype == _OPT and additional:
            msg.edns = rclass
            msg.rcode |= (ttl >> 24) << 4          # extended rcode
            continue
        if len(section) < keep:
            data = _rdata(buf, rtype, start, pos, memo)
            section.append({"name": name, "type": type_name(rtype), "ttl": ttl, "data": data})
            if rclass != 1:
                section[-1]["class"] = class_name(rclass)
            elif count == 1 and section is msg.answers and "\\" not in name:
                # The one answer's JSON, as msgspec writes the list, when it is an A or AAAA
                # record: its name is read_name's printable ASCII (a quote in a label comes
                # escaped, so after a backslash), its data an address's text (the length
                # checked: another is RFC 3597 hex, with a backslash).
                if rtype == 1 and rdlength == 4:
                    msg.answers_json = \
                        f'[{{"name":"{name}","type":"A","ttl":{ttl},"data":"{data}"}}]'
                elif rtype == 28 and rdlength == 16:
                    msg.answers_json = \
                        f'[{{"name":"{name}","type":"AAAA","ttl":{ttl},"data":"{data}"}}]'
    return pos


def _plausible_header(buf: bytes | bytearray, pos: int, is_response: bool | None) -> bool:
    """The 12 bytes at pos look like a DNS header (one question, sane counts, known opcode)."""
    _, flags, qd, an, ns, ar = _HEADER.unpack_from(buf, pos)
    if is_response is not None and bool(flags & 0x8000) != is_response:
        return False
    if (flags >> 11) & 0x0F not in OPCODES:
        return False
    # bool(): struct gives untyped ints, and a compiled `-> bool` refuses an int
    return bool(qd == 1 and max(an, ns, ar) <= 512 and (flags & 0x8000 or an == 0))


def _question_plausible(buf: bytes, pos: int = 12) -> int:
    """Strict check for detection: printable labels, a known type and class. Returns the
    position after the question, or -1."""
    n = len(buf)
    total = 0
    while True:
        if pos >= n:
            return -1
        length = buf[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            return -1
        # Printable bytes only (what _PRINTABLE_LABEL matches): a native loop under mypyc is
        # cheaper than a regex call per label. A label cut by the end fails below (pos >= n).
        for i in range(pos + 1, min(n, pos + 1 + length)):
            c = buf[i]
            if c < 0x21 or c > 0x7E:
                return -1
        total += length + 1
        if total > 255:
            return -1
        pos += 1 + length
    if pos + 4 > n:
        return -1
    qtype = (buf[pos] << 8) | buf[pos + 1]
    qclass = ((buf[pos + 2] << 8) | buf[pos + 3]) & 0x7FFF     # mDNS: top bit = unicast
    if qtype not in TYPES or qclass not in CLASSES:
        return -1
    return pos + 4


def _labels_so_far(buf: bytes, pos: int) -> bool:
    """The question name's labels present in buf are printable (for a partial message)."""
    n = len(buf)
    while pos < n:
        length = buf[pos]
        if length == 0:
            return True
        if length > 63:
            return False
        stop = min(n, pos + 1 + length)
        if stop > pos + 1 and _PRINTABLE_LABEL.fullmatch(buf, pos + 1, stop) is None:
            return False
        pos += 1 + length
    return True


def _whole_message(buf: bytes, is_response: bool) -> Message | None:
    """buf is exactly one plausible DNS message of the given kind: its parse (records walked,
    not decoded), else None."""
    if len(buf) < 17:
        return None
    # _plausible_header(buf, 0, is_response) on a typed bytes, by indexing (native)
    flags = buf[2] << 8 | buf[3]
    if bool(flags & 0x8000) != is_response or (flags >> 11) & 0x0F not in OPCODES:
        return None
    an = buf[6] << 8 | buf[7]
    if buf[4] << 8 | buf[5] != 1 or an > 512 or (buf[8] << 8 | buf[9]) > 512 or \
            (buf[10] << 8 | buf[11]) > 512 or not (flags & 0x8000 or an == 0):
        return None
    if _question_plausible(buf) < 0:
        return None
    try:
        msg = parse(buf, rdata=False)
    except Malformed:
        return None
    return msg if not msg.error and msg.end == len(buf) else None


def _no_records(msg: Message) -> bool:
    """A message with no record besides its EDNS OPT: parsed with or without rdata it is the
    same (OPT is read either way), so the session may take detection's parse as its own."""
    return not msg.ancount and not msg.nscount and \
        (not msg.arcount or (msg.arcount == 1 and msg.edns is not None))


def _side(data: bytes, is_response: bool, parsed: list[tuple[bytes, Message]] | None = None
          ) -> Detect:
    """One direction's first bytes: a whole UDP message, or a TCP length-prefixed one. A
    whole message's parse is appended to `parsed` when the session can reuse it."""
    whole = _whole_message(data, is_response)
    if whole is not None:
        if parsed is not None and _no_records(whole):
            parsed.append((data, whole))
        return Detect.MATCH
    n = len(data)
    if n < 2:
        return Detect.MORE
    length = (data[0] << 8) | data[1]
    if length < 17:
        return Detect.NO
    if n < 14:
        if n >= 5 and is_response is not None and bool(data[4] & 0x80) != is_response:
            return Detect.NO
        return Detect.MORE
    if not _plausible_header(data, 2, is_response):
        return Detect.NO
    if n < 2 + length:
        # Only a header and some of the question so far: check the labels that are there.
        if not _labels_so_far(data, 14):
            return Detect.NO
        return Detect.MORE if length <= 4096 or is_response else Detect.NO
    return Detect.MATCH if _whole_message(bytes(data[2:2 + length]), is_response) else Detect.NO


def detect(client: bytes, server: bytes, parsed: list[tuple[bytes, Message]] | None = None
           ) -> Detect:
    """MATCH when the client's first message is a DNS query or the server's a DNS response
    (a whole UDP datagram, or a length-prefixed TCP message), checked strictly (one question,
    printable labels, known type and class, parses to exactly its length). `parsed` collects
    (bytes, parse) of whole datagrams a session can take instead of parsing them again."""
    c = _side(client, False, parsed) if client else None
    s = _side(server, True, parsed) if server else None
    if c is Detect.MATCH or s is Detect.MATCH:
        return Detect.MATCH
    if Detect.MORE in (c, s):
        return Detect.MORE
    return Detect.NO


# -- the session -------------------------------------------------------------------------

# An entry's request and response keys in their order, with the values of a message without a
# question, and of a response without an error: _request and _response copy them and set the
# rest. A copy of a dict clones its table whole (CPython's dict.copy), where a dict display
# inserts key by key and grows the table on the way (~2k instructions a dict, compiled).
_REQUEST: Final[dict[str, Any]] = {
    "id": 0, "opcode": "", "qname": "", "qtype": "", "qclass": "", "rd": False, "flags": 0,
    "questions": 0, "edns": None,
}
_RESPONSE: Final[dict[str, Any]] = {
    "id": 0, "rcode": "", "aa": False, "ra": False, "truncated": False, "answers": None,
    "answer_count": 0, "authority_count": 0, "additional_count": 0, "error": None,
}


class _Asked:
    """What a request's entry makes of its question (name, type, class, opcode and count):
    the request fields without the message's own (id, rd, flags, edns), and the summary;
    and the JSON of those fields after the id for the last flags and edns seen with it
    (_request_json)."""

    __slots__ = ("qtype", "qclass", "opcode", "count", "fields", "summary", "other",
                 "json_head", "json_flags", "json_edns", "json_tail")

    def __init__(self, qtype: int, qclass: int, opcode: int, count: int,
                 fields: dict[str, Any], summary: str, other: _Asked | None) -> None:
        self.qtype = qtype
        self.qclass = qclass
        self.opcode = opcode
        self.count = count
        self.fields = fields        # never handed out: entries get copies
        self.summary = summary
        self.other = other          # the same name's previous question (another type...)
        # The request's JSON from its opcode to its "rd" key (`,"opcode":...,"rd":`), when
        # the name needs no escape ("": encoded by msgspec, _request_tail).
        self.json_head = ""
        # The request's JSON after its id (`,"opcode":...}`) for these flags and edns (-1:
        # none; json_flags -1: not made yet).
        self.json_flags = -1
        self.json_edns = -1
        self.json_tail = ""


# The _Asked of recent questions by name (a short chain per name: A and AAAA, ...), at most
# NAME_CACHE_SIZE names (then emptied: a bound, not an LRU): clients ask the same questions
# again and again, and a request's fields were a template's copy with 9 values set and 3
# table lookups (~3.5k instructions with the summary, compiled); now a copy with 4 set. By
# the name alone: it is read from _NAMES, so its hash is kept (a (name, type) tuple was
# made and hashed per request).
_ASKED: Final[dict[str, _Asked]] = {}
_ASKED_PER_NAME: Final = 4


def _asked(msg: Message) -> _Asked:
    opcode = (msg.flags >> 11) & 0x0F
    count = msg.qdcount
    qtype, qclass = msg.qtype, msg.qclass
    first = found = _ASKED.get(msg.qname)
    kept = 0
    while found is not None:
        if found.qtype == qtype and found.qclass == qclass and found.opcode == opcode and \
                found.count == count:
            return found
        kept += 1
        found = found.other
    # The template's copy, its values replaced: the same keys in the same order as a dict
    # display, without building the table key by key (see _REQUEST).
    fields = _REQUEST.copy()
    qname = msg.qname
    opcode_text = OPCODES.get(opcode) or str(opcode)
    fields["opcode"] = opcode_text
    fields["qname"] = qname
    qtype_text = qclass_text = ""
    if count:
        qtype_text = TYPES.get(qtype) or f"TYPE{qtype}"
        qclass_text = CLASSES.get(qclass) or f"CLASS{qclass}"
        fields["qtype"] = qtype_text
        fields["qclass"] = qclass_text
        summary = f"{qtype_text} {qname}"
    else:
        summary = f"{OPCODES.get(opcode, 'opcode')} (no question)"
    fields["questions"] = count
    if first is None and len(_ASKED) >= NAME_CACHE_SIZE:
        _ASKED.clear()
    # In front of the name's chain, which starts again once it is that long.
    found = _Asked(qtype, qclass, opcode, count, fields, summary,
                   first if kept < _ASKED_PER_NAME else None)
    if "\\" not in qname:
        # JSON writes the texts as they are: read_name's names are printable ASCII (a quote
        # in a label comes escaped, after a backslash); the others are the tables' names or
        # their numbers'.
        found.json_head = f',"opcode":"{opcode_text}","qname":"{qname}","qtype":"{qtype_text}",' \
            f'"qclass":"{qclass_text}","rd":'
    _ASKED[qname] = found
    return found


# The entry's request JSON (Exchange.request_json) from its _Asked's kept parts: the request
# dict's encoding was ~2.3k instructions a row, one f-string of the id's digits and the kept
# tail made a Raw ~1k. The dict is still made (Exchange.request is a dict by contract).
_ENCODE: Final = ENCODER.encode      # the entry's encoder: the same bytes
_RAW: Final = msgspec.Raw
_ID_HEAD: Final = b'{"id":0'


def _request_json(msg: Message, asked: _Asked, fields: dict[str, Any],
                  id_text: str) -> msgspec.Raw:
    """encode(fields), where `fields` is _request(msg, asked) and `id_text` str(msg.id): the
    id's digits, then the encoding after them kept per _Asked for its last flags and edns."""
    flags = msg.flags
    edns = msg.edns
    edns_key = -1 if edns is None else edns
    if flags != asked.json_flags or edns_key != asked.json_edns:
        head = asked.json_head
        if head:
            # Typed texts and ints only: an f-string of the dict's values (objects) was ~4k
            # instructions, msgspec's encoding of the dict ~4.5k with the copy it needs.
            edns_text = "null" if edns is None else str(edns)
            rd_text = "true" if flags & 0x0100 else "false"
            asked.json_tail = f'{head}{rd_text},"flags":{flags},"questions":{asked.count},' \
                f'"edns":{edns_text}}}'
        else:       # (names are ASCII text; Raw writes a str's UTF-8 back)
            asked.json_tail = _ENCODE({**fields, "id": 0})[len(_ID_HEAD):].decode()
        asked.json_flags = flags
        asked.json_edns = edns_key
    return _RAW(f'{{"id":{id_text}{asked.json_tail}')


class _Header:
    """The response fields a header makes (never handed out: copied), and the JSON of a
    response with them after its id, cut around its answers (made at its first use)."""

    __slots__ = ("fields", "head", "rest")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.head = ""          # `,"rcode":...,"answers":`
        self.rest = ""          # `,"answer_count":...}`


# The response fields a header makes (rcode, aa, ra, truncated, the record counts) by its
# key (_answer_header), at most NAME_CACHE_SIZE: a node's responses have a few headers, and
# a response's fields were a template's copy with 10 values set (~2.5k instructions,
# compiled); now a copy with 2 set.
_ANSWER_HEADERS: Final[dict[int, _Header]] = {}


def _answer_header(msg: Message) -> _Header:
    """The response fields of `msg` but its id and records."""
    flags, rcode = msg.flags, msg.rcode
    ancount, nscount, arcount = msg.ancount, msg.nscount, msg.arcount
    # The flags' aa, tc and ra bits, the (extended) rcode and the counts, packed in one int
    # (below 2**62: a native int compiled) when the counts are small, as they almost always
    # are; -1 (not kept) otherwise.
    key = -1
    if ancount < 256 and nscount < 256 and arcount < 256 and rcode < 4096:
        key = (flags & 0x0680) | rcode << 16 | ancount << 28 | nscount << 36 | arcount << 44
        found = _ANSWER_HEADERS.get(key)
        if found is not None:
            return found
    text = RCODES.get(rcode) or f"RCODE{rcode}"
    fields = _RESPONSE.copy()
    fields["rcode"] = text
    fields["aa"] = bool(flags & 0x0400)
    fields["ra"] = bool(flags & 0x0080)
    fields["truncated"] = bool(flags & 0x0200)
    fields["answer_count"] = ancount
    fields["authority_count"] = nscount
    fields["additional_count"] = arcount
    if rcode:
        fields["error"] = text
    header = _Header(fields)
    if key >= 0:
        if len(_ANSWER_HEADERS) >= NAME_CACHE_SIZE:
            _ANSWER_HEADERS.clear()
        _ANSWER_HEADERS[key] = header
    return header


_ANSWERS_KEY: Final = ',"answers":'


def _response_json(header: _Header, id_text: str, answers_json: str) -> msgspec.Raw:
    """encode() of a response's fields made of `header` and answers whose JSON is
    `answers_json` (no authorities or additionals keys): its id's digits, the header's kept
    head, the answers, the header's kept rest."""
    if not header.head:
        # The answers come right after the header's flags (_RESPONSE's order); no string
        # before them holds the key (rcode's text is a name or RCODE<n>).
        text = _ENCODE({**header.fields, "id": 0, "answers": []})[len(_ID_HEAD):].decode()
        at = text.index(_ANSWERS_KEY + "[]") + len(_ANSWERS_KEY)
        header.head, header.rest = text[:at], text[at + 2:]
    return _RAW(f'{{"id":{id_text}{header.head}{answers_json}{header.rest}')


class _Query:
    __slots__ = ("msg", "ts", "ref", "offset", "size", "notes", "done")

    def __init__(self, msg: Message, ts: int, ref: PacketRef, offset: int, size: int) -> None:
        self.msg = msg
        self.ts = ts
        self.ref = ref
        self.offset = offset
        self.size = size
        self.notes: list[str] = []
        self.done = False


class _TcpReader(StreamReader):
    """One direction of DNS over TCP: length-prefixed frames, resync after a gap."""

    __slots__ = ("s", "started", "synced")

    def __init__(self, session: DnsSession, direction: Direction) -> None:
        super().__init__(direction)
        self.s = session
        self.started = False
        self.synced = True

    def feed(self, data: bytes, offset: int, ts: int, ref: PacketRef) -> None:
        if not self.started:        # a DNS stream is read from wherever it was joined
            self.started = True
            self.expected = offset
        super().feed(data, offset, ts, ref)

    def parse(self, buf: bytes | bytearray, base: int, ts: int, ref: PacketRef) -> int:
        pos = 0
        n = len(buf)
        is_response = self.direction == Direction.SERVER_TO_CLIENT
        while n - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if not self.synced:
                # A frame start has qdcount 1 at +6: find candidates at C speed.
                i = buf.find(b"\x00\x01", pos + 6)
                if i < 0:
                    pos = max(pos, n - 7)
                    break
                pos = i - 6
                length = (buf[pos] << 8) | buf[pos + 1]
                if n - pos < 14:
                    break
                if length < 17 or not _plausible_header(buf, pos + 2, is_response):
                    pos += 1
                    continue
                if n - pos < 2 + length:
                    if length > 4096 and not is_response:
                        pos += 1
                        continue
                    break
                if _whole_message(bytes(buf[pos + 2:pos + 2 + length]), is_response) is None:
                    pos += 1
                    continue
                self.synced = True
                self.skipped += pos
            if n - pos < 2 + length:
                break
            end = pos + 2 + length
            self.s.message(bytes(buf[pos + 2:end]), self.direction,
                           self.span(base + pos, base + end, ts, ref))
            pos = end
        if pos and not self.synced:
            self.skipped += pos
        return pos

    def lose(self, offset: int, end: int, ts: int) -> None:
        self.skipped += len(self.buf)
        self.synced = False


class DnsSession:
    def __init__(self, flow: FlowInfo, emit: Emit, body_limit: int = 0,
                 parsed: list[tuple[bytes, Message]] | None = None) -> None:
        self.flow = flow
        # Detection's parses of this flow's first datagrams (see DnsDissector): taken, when
        # the bytes are the same, instead of parsing them again.
        self.parsed = parsed
        self.emit = emit
        self.body_limit = body_limit
        self.tcp = flow.transport == "tcp"
        self.pending: dict[int, _Query | deque[_Query]] = {}   # by id, oldest first
        # Pending queries, oldest first from `head` (lazy: answered ones may stay until they
        # reach the head). A list and an index rather than a deque: compiled, a list's append
        # and item are native, a deque's append and popleft calls by name (~350 instructions
        # each, per query).
        self.order: list[_Query] = []
        self.head = 0
        self.waiting = 0
        # The client's next stream offset (a response without its query, or a query from the
        # server's side, is placed there); an int, not a list per flow of both directions'.
        self.client_next = 0
        self.readers = (_TcpReader(self, Direction.CLIENT_TO_SERVER),
                        _TcpReader(self, Direction.SERVER_TO_CLIENT)) if self.tcp else None
        self.malformed = 0                        # messages dropped as unreadable
        self.errors = 0                           # unexpected exceptions caught (bugs)
        self._closed = False

    def held_bytes(self) -> int:
        """TCP readers' buffers, and the wire size of each query waiting for its answer."""
        if self._closed:
            return 0
        held = sum(query.size for query in self.order if not query.done)
        if self.readers is not None:
            held += self.readers[0].held_bytes() + self.readers[1].held_bytes()
        return held

    @property
    def skipped_bytes(self) -> int:
        """Bytes of a TCP stream passed over while looking for a message start."""
        return 0 if self.readers is None else self.readers[0].skipped + self.readers[1].skipped

    def on_data(self, direction: Direction, data: bytes, offset: int, ts_ns: int,
                ref: PacketRef) -> None:
        if self._closed or not data:
            return
        try:
            if self.readers is not None:
                self.readers[direction].feed(data, offset, ts_ns, ref)
            else:               # a datagram: one message, its first and last packet the same
                self._message(data if type(data) is bytes else bytes(data), direction, offset,
                              len(data), ts_ns, ref, ts_ns, ref)
        except Exception:       # a bug must not end the flow's dissection: count and go on
            self.errors += 1
        if direction == Direction.CLIENT_TO_SERVER:
            self.client_next = offset + len(data)

    def on_gap(self, direction: Direction, offset: int, length: int, ts_ns: int) -> None:
        if self.readers is not None and not self._closed:
            self.readers[direction].gap(offset, length, ts_ns)
        if direction == Direction.CLIENT_TO_SERVER:
            self.client_next = offset + length

    def on_close(self, ts_ns: int) -> None:
        if self._closed:
            return
        self._closed = True
        for query in self.order:
            if not query.done:
                query.done = True
                self._unanswered(query, "no response")
        self.order.clear()
        self.head = 0
        self.pending.clear()

    # -- messages --

    def message(self, data: bytes, direction: Direction, span: Span) -> None:
        """One DNS message (a frame of a TCP stream without its length)."""
        self._message(data, direction, span.start, span.end - span.start, span.first_ts,
                      span.first_ref, span.last_ts, span.last_ref)

    def _message(self, data: bytes, direction: Direction, offset: int, size: int, ts: int,
                 ref: PacketRef, end_ts: int, end_ref: PacketRef) -> None:
        """One DNS message (a datagram, or a TCP frame) at stream offset `offset`, `size`
        bytes on the wire, its first byte in (ts, ref) and its last in (end_ts, end_ref)."""
        try:
            msg = self._parsed(data) if self.parsed else None
            if msg is None:
                msg = parse(data, keep_all=self.body_limit > 0)
        except Malformed as exc:
            if len(data) < 12:
                self.malformed += 1
                return
            # The header is there: an entry with what it says and why the rest failed.
            msg = Message()
            msg.id = (data[0] << 8) | data[1]
            msg.flags = (data[2] << 8) | data[3]
            msg.qdcount, msg.ancount, msg.nscount, msg.arcount = (
                (data[i] << 8) | data[i + 1] for i in (4, 6, 8, 10))
            msg.rcode = msg.flags & 0x0F
            msg.error = str(exc)
        if self.head < len(self.order):
            self._expire(ts)
        pending = self.pending
        if not msg.flags & 0x8000:                          # a query
            if direction != Direction.CLIENT_TO_SERVER:     # a query from the server's side
                offset = self.client_next
            asked = _Query(msg, ts, ref, offset, size)
            if msg.error:
                asked.notes.append(f"malformed: {msg.error}")
            # The one query waiting with an id is kept as itself; a second with that id
            # makes a deque of them, oldest first.
            same_id = pending.get(msg.id)
            if same_id is None:
                pending[msg.id] = asked
            elif isinstance(same_id, _Query):
                pending[msg.id] = deque((same_id, asked))
            else:
                same_id.append(asked)
            self.order.append(asked)
            self.waiting += 1
            if self.waiting > MAX_PENDING:
                self._expire(None)
            return
        waiting = pending.pop(msg.id, None)
        query: _Query | None = None
        if isinstance(waiting, _Query):
            if not waiting.done:
                query = waiting
        elif waiting is not None:
            while waiting:
                candidate = waiting.popleft()
                if not candidate.done:
                    query = candidate
                    break
            if waiting:
                pending[msg.id] = waiting
        if query is not None:
            query.done = True
            self.waiting -= 1
            if self.order[self.head] is query:   # done queries leave at once, not lazily
                self._popleft()
        self._answered(query, msg, direction, offset, size, ts, ref, end_ts, end_ref)

    def _parsed(self, data: bytes) -> Message | None:
        """Detection's parse of exactly these bytes, if it made one (used once)."""
        parsed = self.parsed
        assert parsed is not None
        for i, (seen, msg) in enumerate(parsed):
            if seen == data:
                del parsed[i]
                if not parsed:
                    self.parsed = None   # no empty list kept for the flow's life
                return msg
        self.parsed = None      # past the datagrams detection saw
        return None

    def _expire(self, now: int | None) -> None:
        """Emit queries that waited too long (now=None: the oldest one, to make room)."""
        order = self.order
        while self.head < len(order):
            query = order[self.head]
            if query.done:
                self._popleft()
                continue
            if now is not None and now - query.ts <= QUERY_TIMEOUT_NS:
                return
            self._popleft()
            query.done = True
            self.waiting -= 1
            same_id = self.pending.get(query.msg.id)
            if same_id is query:
                del self.pending[query.msg.id]
            elif same_id is not None and not isinstance(same_id, _Query):
                same_id.remove(query)
                if not same_id:
                    del self.pending[query.msg.id]
            self._unanswered(query, "no response within 10 s" if now is not None
                             else "no response (too many queries waiting)")
            if now is None:
                return

    def _popleft(self) -> None:
        """The oldest query leaves `order`: the head moves on; the list is emptied when all
        have left, and its left part dropped once that is most of it (amortised O(1))."""
        order = self.order
        head = self.head + 1
        if head == len(order):
            order.clear()
            head = 0
        elif head > 64 and head * 2 > len(order):
            del order[:head]
            head = 0
        self.head = head

    @staticmethod
    def _request(msg: Message, asked: _Asked) -> dict[str, Any]:
        """The request fields of `msg`: its question's (`asked`, _asked's) copied, the
        message's own set."""
        flags = msg.flags
        fields = asked.fields.copy()
        fields["id"] = msg.id
        fields["rd"] = bool(flags & 0x0100)
        fields["flags"] = flags
        fields["edns"] = msg.edns
        return fields

    def _response(self, msg: Message, header: _Header) -> dict[str, Any]:
        """The response fields of `msg`: its header's (`header`, _answer_header's) copied,
        its id and records set."""
        fields = header.fields.copy()
        fields["id"] = msg.id
        # A list of the entry's own (an empty section is the shared _NO_RECORDS).
        fields["answers"] = msg.answers or []
        if self.body_limit > 0:
            fields["authorities"] = msg.authorities or []
            fields["additionals"] = msg.additionals or []
        return fields

    def _unanswered(self, query: _Query, why: str) -> None:
        msg = query.msg
        asked = _asked(msg)
        request = self._request(msg, asked)
        self.emit(Exchange(
            protocol="dns", start_ns=query.ts, end_ns=None, summary=asked.summary,
            request=request, response=None, status=None,
            request_size=query.size, complete=False, first_ref=query.ref, last_ref=query.ref,
            client_offset=query.offset, notes=[*query.notes, why],
            request_json=_request_json(msg, asked, request, str(msg.id))))

    def _answered(self, query: _Query | None, msg: Message, direction: Direction,
                  offset: int, size: int, ts: int, ref: PacketRef, end_ts: int,
                  end_ref: PacketRef) -> None:
        # The query's id is the response's (pending is keyed by it): its digits made once.
        id_text = str(msg.id)
        if query is not None:
            asked = _asked(query.msg)
            request = self._request(query.msg, asked)
            request_json = _request_json(query.msg, asked, request, id_text)
            notes = query.notes         # the query is done: its list is taken, not copied
            start_ns, first_ref, client_offset = query.ts, query.ref, query.offset
            request_size = query.size
        else:
            asked = _asked(msg)
            request = self._request(msg, asked)
            request_json = _request_json(msg, asked, request, id_text)
            notes = ["query not captured"]
            start_ns, first_ref, request_size = ts, ref, 0
            client_offset = (offset if direction == Direction.CLIENT_TO_SERVER
                             else self.client_next)
        if msg.error:
            notes.append(f"malformed: {msg.error}")
        elif msg.ancount > len(msg.answers):
            notes.append(f"{msg.ancount} answers, {len(msg.answers)} listed")
        header = _answer_header(msg)
        # The response's JSON when its answers' is known: none listed, or the one record
        # parse made it of (the detail view's responses have authorities and additionals
        # keys too: encoded as dicts).
        response_json = None
        if self.body_limit <= 0:
            if not msg.answers:
                response_json = _response_json(header, id_text, "[]")
            elif msg.answers_json:
                response_json = _response_json(header, id_text, msg.answers_json)
        # Positional: Exchange's fields in order.
        self.emit(Exchange("dns", start_ns, end_ts, asked.summary, request,
                           self._response(msg, header), msg.rcode, request_size, size,
                           query is not None, first_ref, end_ref, client_offset, offset, None,
                           None, notes, request_json, response_json))


class DnsDissector:
    name = "dns"
    transports = frozenset({"udp", "tcp"})
    ports = frozenset({53, 5353, 5355})
    client_first = True         # a query

    def __init__(self) -> None:
        # The parses of the whole datagrams the last detect() saw: the selector makes the
        # claiming session right after a MATCH and replays those datagrams to it, so the
        # session takes them (compared byte for byte) instead of parsing each message twice.
        self._parsed: list[tuple[bytes, Message]] = []

    def detect(self, client: bytes, server: bytes) -> Detect:
        self._parsed = []
        return detect(client, server, self._parsed)

    def session(self, flow: FlowInfo, emit: Emit, body_limit: int = 0) -> DnsSession:
        parsed, self._parsed = self._parsed, []
        return DnsSession(flow, emit, body_limit, parsed or None)
