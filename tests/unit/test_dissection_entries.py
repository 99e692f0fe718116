"""How dissection makes an entry: the parts a flow shares are encoded once and spliced in
(worker.dissection.IndexedEntry, FlowEntries), yet every entry says what it would have said
made from scratch as a shark.model.Entry."""

from __future__ import annotations

import copy
import ipaddress
import json
import random

import msgspec
import pytest

from factories import LINKTYPE_ETHERNET, tcp_conversation
from shark.model import Endpoint, Entry, Size, TcpInfo, UdpInfo, decode_entry, encode
from worker.dissection import Dissection, IndexedEntry, elapsed_ms
from worker.names import NameTable
from worker.redact import Redactor


def test_elapsed_ms_is_the_float_round_gives():
    rng = random.Random(17)
    values = [0, 1, 499, 500, 501, 999, 1000, 1500, 2500, 62_500, 10**15 - 1, 10**15,
              10**15 + 1, 2**53, 2**53 + 1, 2**60]
    for scale in (1, 10**3, 10**6, 10**9, 10**12, 10**14):
        values += [rng.randrange(scale, scale * 1000) for _ in range(2000)]
    values += [n * 1000 + rest for n in range(300) for rest in range(0, 1000, 7)]   # every tail
    values += [n * 1000 + 500 for n in range(1000)]                                  # the ties
    start = 1_764_150_000_123_456_789
    for ns in values:
        assert elapsed_ms(start, start + ns) == round(ns / 1e6, 3), ns
    assert elapsed_ms(start, start - 5) == 0.0                   # a response before its request
    assert elapsed_ms(0.5, 1234.0) == round(1233.5 / 1e6, 3)     # not ints: round() itself


def test_an_endpoint_joined_from_its_parts_is_the_endpoint_encoded():
    """Dissection.endpoint_json joins an unnamed endpoint's JSON from kept parts: the same bytes
    as msgspec's Endpoint (addresses that need escaping too); a named one is encoded."""
    dissection = Dissection("n")
    rng = random.Random(5)
    ips = ["10.0.0.1", "fd00::2", "127.0.0.1", 'a"b\\c', "é", ""]
    ips += [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(50)]
    ips += [str(ipaddress.ip_address(rng.getrandbits(128))) for _ in range(50)]
    for ip in ips:
        for port in (0, 1, 53, 65535, rng.randrange(65536), -1):
            for named in (None, ("web-1", "shop", "pod")):
                made = dissection.endpoint_json(ip, port, named)
                expected = Endpoint(ip, port) if named is None else Endpoint(ip, port, *named)
                assert bytes(made) == encode(expected), (ip, port, named)
                assert bytes(dissection.server_json(ip, port, named)) == encode(expected)


def test_an_indexed_entry_has_the_fields_of_an_entry_in_their_order():
    assert IndexedEntry.__struct_fields__ == Entry.__struct_fields__
    assert IndexedEntry.__struct_config__.omit_defaults == Entry.__struct_config__.omit_defaults


@pytest.mark.parametrize("facts", [
    {"tcp": TcpInfo(handshake_ms=0.25, syns=2, closed_by="server", failure="reset")},
    {"udp": UdpInfo(failure="refused")},
    {},
])
def test_an_indexed_entry_encodes_as_the_entry(facts: dict) -> None:
    src = Endpoint("10.0.0.1", 40000, "web-1", "shop", "pod")
    dst = Endpoint("fd00::2", 5432)
    entry = Entry(id="n:7", node="n", protocol="postgres", ts=1764150000.123456, src=src, dst=dst,
                  summary="SELECT 1", elapsed_ms=1.5, status=0, request={"query": "SELECT 1"},
                  response={"rows": 1}, size=Size(10, 20), tls=True, complete=False,
                  notes=["gap in response"], **facts)
    raw = {name: msgspec.Raw(encode(value)) for name, value in facts.items()}
    indexed = IndexedEntry("n:7", "n", "postgres", 1764150000.123456, msgspec.Raw(encode(src)),
                           msgspec.Raw(encode(dst)), "SELECT 1", 1.5, 0, {"query": "SELECT 1"},
                           {"rows": 1}, Size(10, 20), True, (), False, ["gap in response"],
                           raw.get("tcp"), raw.get("udp"))
    assert encode(indexed) == encode(entry)
    assert decode_entry(encode(indexed)) == entry


def _http(n: int) -> tuple[bytes, bytes]:
    body = b'{"n": %d}' % n
    return (b"GET /item/%d?token=s3cret HTTP/1.1\r\nHost: shop\r\n\r\n" % n,
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_the_entries_of_one_flow_carry_the_names_as_they_are_when_each_is_made():
    names = NameTable()
    dissection = Dissection("n", identities=names, redactor=Redactor("key"))
    requests, responses = zip(*(_http(n) for n in range(4)))
    packets = tcp_conversation(list(requests), list(responses), server=("10.0.0.2", 8080))
    frames = [((0, i), LINKTYPE_ETHERNET, ts, frame, wirelen)
              for i, (ts, frame, wirelen) in enumerate(packets)]
    tables = [({"10.0.0.1": ("web-1", "shop", "pod")}, None),
              ({"10.0.0.1": ("web-2", "shop", "pod"), "10.0.0.2": ("db", "shop", "service")}, None),
              ({}, [ipaddress.ip_network("10.0.0.0/8")]),
              ({}, [ipaddress.ip_network("192.168.0.0/16")])]
    entries = []
    # one exchange (request, ACK, response, ACK) per step, the names replaced in between
    for step, (table, nets) in enumerate(tables):
        names.replace(table, nets)
        dissection.feed(frames[:3 + 4 * (step + 1)] if step == 0 else
                        frames[3 + 4 * step:3 + 4 * (step + 1)])
        if step == len(tables) - 1:
            dissection.feed(frames[3 + 4 * len(tables):])
        entries += [json.loads(row.entry_json) for row in dissection.take_rows()]
    assert [(e["src"]["name"], e["src"]["kind"], e["dst"]["name"], e["dst"]["kind"])
            for e in entries] == [("web-1", "pod", "", ""), ("web-2", "pod", "db", "service"),
                                  ("", "", "", ""), ("", "external", "", "external")]
    assert [e["request"]["path"] for e in entries] == [f"/item/{n}" for n in range(4)]
    assert all(e["src"] == {**e["src"], "ip": "10.0.0.1", "port": 40000} for e in entries)
    assert all(e["dst"] == {**e["dst"], "ip": "10.0.0.2", "port": 8080} for e in entries)
    # the redactor still saw each entry: the query's token is hashed
    assert all("s3cret" not in json.dumps(e) for e in entries)


def _golden_batches() -> list[list]:
    """Every golden capture's packets, one after the other, in batches of 50 (stored refs)."""
    from support.golden import GOLDEN
    from worker.sources import open_file_source
    packets, number = [], 0
    for path in sorted(GOLDEN.rglob("*.pcap")):
        source = open_file_source(path)
        while not source.finished:
            for ts_ns, data, wirelen in source.read_batch(4096):
                packets.append(((0, number), source.linktype, ts_ns, data, wirelen))
                number += 1
        source.close()
    return [packets[at:at + 50] for at in range(0, len(packets), 50)]


def test_numbered_rows_are_the_wire_rows_numbered():
    """The in-thread pipeline's rows, made numbered as exchanges are emitted (numbered=True),
    are the values take_values makes of the WireRows (their WireFlows resolved, numbered_values): the same seqs, the
    same entry JSON with its id (a bytearray, as sqlite binds it), the same columns; rows
    discarded (a failed batch) give their seqs back alike."""
    names = NameTable()
    made = {numbered: Dissection("node-1", 7, identities=names, redactor=Redactor("k"),
                                 numbered=numbered) for numbered in (False, True)}
    taken: dict[bool, list] = {False: [], True: []}
    discarded = 0
    for number, batch in enumerate([*_golden_batches(), None]):
        for numbered, dissection in made.items():
            if batch is None:
                dissection.close_all()
            else:
                dissection.feed(batch)
            if number % 5 == 3 and dissection.has_pending():
                dissection.discard_pending()
                discarded += numbered
            else:
                taken[numbered] += dissection.take_values()
    assert discarded >= 3
    assert len(taken[True]) > 100
    assert taken[True] == taken[False]
    assert [value[0] for value in taken[True]] == list(range(7, 7 + len(taken[True])))
    assert all(type(value[3]) is bytearray for value in taken[True])
    assert {json.loads(value[3])["protocol"] for value in taken[True]} >= {
        "http", "dns", "redis", "postgres", "mysql", "mqtt", "amqp"}
    with pytest.raises(ValueError):
        made[True].take_wire_report()


@pytest.mark.parametrize("fields", [(), ("seq", "payload", "n"), ("Sessión",)])
def test_entries_are_those_the_redactor_makes_of_the_unredacted_ones(fields: tuple) -> None:
    """Dissection calls Redactor.entry only for an entry it could change (SUMMARY_READ's, or a
    side redact_scan.message_left_alone does not pass): every golden entry is what entry()
    makes of the same entry made without a redactor, with field names that are in the
    WebSocket goldens' JSON texts ("seq", "payload"), in none, and one not ASCII."""
    redactor = Redactor("k", headers=["upgrade", "date"], fields=fields)
    rows = {}
    for redacting in (False, True):
        dissection = Dissection("node-1", redactor=redactor if redacting else None, numbered=True)
        for batch in _golden_batches():
            dissection.feed(batch)
        dissection.close_all()
        rows[redacting] = [json.loads(bytes(value[3])) for value in dissection.take_values()]
    redacted = 0
    assert len(rows[True]) == len(rows[False]) > 100
    for plain, made in zip(rows[False], rows[True]):
        entry = msgspec.convert(copy.deepcopy(plain), Entry)   # (convert keeps the dicts)
        redactor.entry(entry)
        assert msgspec.to_builtins(entry) == made, plain["summary"]
        redacted += made != plain
    texts = sum(1 for made in rows[True] if made["protocol"] == "websocket" and
                "[redacted:" in (made["request"] or {}).get("text", ""))
    # not vacuous: the headers are hashed in every upgrade; with "seq" the JSON texts are too
    assert redacted > 0 and (texts > 0) == ("seq" in fields)
