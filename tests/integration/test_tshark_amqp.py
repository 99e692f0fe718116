"""Cross-check with tshark on the AMQP golden capture: the methods (class, method) and the
routing keys of basic.publish / basic.deliver / basic.get-ok, message by message.

tshark 4.0 quirks: `-T fields` joins the values of several frames in one TCP segment with
commas, and prints a field only for the frames that have it (so columns of different fields
do not line up); `-T json` repeats the "amqp" key once per frame, read here with
object_pairs_hook.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter


from support.golden import GOLDEN, dissect_capture

PCAP = GOLDEN / "amqp" / "basic.pcap"
CLOSES = ("channel.close", "connection.close")


def tshark(*args: str) -> str:
    return subprocess.run(["tshark", "-r", str(PCAP), *args], check=True, capture_output=True,
                          text=True).stdout


def tshark_methods() -> list[tuple[int, int]]:
    out = tshark("-Y", "amqp", "-T", "fields", "-e", "amqp.method.class",
                 "-e", "amqp.method.method")
    methods = []
    for line in out.splitlines():
        classes, _, ids = line.partition("\t")
        if classes:
            methods += [(int(c), int(m)) for c, m in zip(classes.split(","), ids.split(","))]
    return methods


def tshark_frames() -> list[dict]:
    """Every AMQP frame tshark decoded, in capture order, as its JSON object."""
    def pairs(items: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key == "amqp":
                out.setdefault("amqp", []).append(value)
            else:
                out[key] = value
        return out
    packets = json.loads(tshark("-Y", "amqp", "-T", "json", "-J", "amqp"),
                         object_pairs_hook=pairs)
    return [frame for packet in packets for frame in packet["_source"]["layers"]["amqp"]]


def our_methods(entries: list[dict]) -> list[str]:
    names = []
    for e in entries:
        names.append(e["request"]["method"])
        response = e["response"]
        # a channel.close that answers a request is also an entry of its own: count it once
        if response is not None and response["method"] not in CLOSES:
            names.append(response["method"])
    return names


def test_methods_match_tshark() -> None:
    from worker.dissectors.amqp import method_name
    entries = dissect_capture(PCAP)
    theirs = Counter(method_name(*m) for m in tshark_methods())
    assert sum(theirs.values()) >= 45
    assert Counter(our_methods(entries)) == theirs


def test_routing_keys_and_body_sizes_match_tshark() -> None:
    from worker.dissectors.amqp import method_name
    frames = tshark_frames()
    theirs: list[tuple[str, str, str, int]] = []
    for i, frame in enumerate(frames):
        if frame.get("amqp.type") != "1":
            continue
        name = method_name(int(frame["amqp.method.class"]), int(frame["amqp.method.method"]))
        if name in ("basic.publish", "basic.deliver", "basic.get-ok"):
            args = frame["amqp.method.arguments"]
            header = frames[i + 1]
            theirs.append((name, args["amqp.method.arguments.exchange"],
                           args["amqp.method.arguments.routing_key"],
                           int(header["amqp.header.body-size"])))
    ours = []
    for e in dissect_capture(PCAP):
        for message in (e["request"], e["response"] or {}):
            if message.get("method") in ("basic.publish", "basic.deliver", "basic.get-ok"):
                ours.append((message["method"], message["exchange"], message["routing_key"],
                             message["body_size"]))
    assert len(theirs) == 7
    assert Counter(ours) == Counter(theirs)
