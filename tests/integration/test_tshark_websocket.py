"""Cross-check with tshark on the WebSocket golden capture: data messages per direction,
their opcodes and texts (tshark inflates permessage-deflate too), ping/pong and close codes.

tshark 4.0 quirks: websocket.payload_length is the 7-bit field (126/127 when an extended
length follows: websocket.payload_length_ext_16/_64), and a fragmented text message is not
reassembled (its text field stays empty), so texts are compared for one-frame messages."""

from __future__ import annotations

import subprocess


from support.golden import GOLDEN, dissect_capture

PCAP = GOLDEN / "websocket" / "basic.pcap"
FIELDS = ["tcp.srcport", "websocket.fin", "websocket.opcode", "websocket.payload_length",
          "websocket.payload_length_ext_16", "websocket.payload_length_ext_64",
          "websocket.payload.close.status_code", "websocket.payload.text"]



def tshark_frames(port: int) -> list[dict[str, str]]:
    argv = ["tshark", "-r", str(PCAP), "-d", f"tcp.port=={port},http", "-Y", "websocket",
            "-T", "fields", "-E", "occurrence=f"]
    for field in FIELDS:
        argv += ["-e", field]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [dict(zip(FIELDS, line.split("\t"))) for line in out.splitlines() if line.strip()]


# Remove the marker once HttpSession calls its hook with emit and body_limit (the HTTP/2
# work's h2c golden test waits for the same change).
def test_websocket_matches_tshark() -> None:
    entries = dissect_capture(PCAP)
    port = entries[0]["dst"]["port"]
    frames = tshark_frames(port)
    # tshark's frames grouped into messages: a data message is its first frame (text or
    # binary) up to the frame with FIN.
    messages: list[tuple[str, str, int, str]] = []    # (direction, opcode, frames, text)
    controls: list[tuple[str, str, str]] = []           # (direction, opcode, close code)
    opening: dict[str, list] = {}
    names = {"0": "continuation", "1": "text", "2": "binary", "8": "close", "9": "ping",
             "10": "pong"}
    for f in frames:
        direction = "server" if f["tcp.srcport"] == str(port) else "client"
        opcode = names[f["websocket.opcode"]]
        if opcode in ("close", "ping", "pong"):
            controls.append((direction, opcode, f["websocket.payload.close.status_code"]))
            continue
        current = opening.setdefault(direction, [])
        current.append(f)
        if f["websocket.fin"] == "1":
            first = current[0]
            messages.append((direction, names[first["websocket.opcode"]], len(current),
                             first["websocket.payload.text"] if len(current) == 1 else ""))
            opening[direction] = []
    ours = [e for e in entries if e["protocol"] == "websocket"]
    data = [e["request"] for e in ours if e["request"]["opcode"] in ("text", "binary")]
    assert [(m[0], m[1], m[2]) for m in messages] == [
        (r["direction"], r["opcode"], r["frames"]) for r in data]
    for message, request in zip(messages, data):
        if message[2] == 1 and request["opcode"] == "text":
            assert message[3] == request["text"]
    our_controls = []
    for e in ours:
        for side in (e["request"], e["response"]):
            if side is not None and side["opcode"] in ("close", "ping", "pong"):
                code = str(side.get("code") or "")
                our_controls.append((side["direction"], side["opcode"], code))
    assert sorted(controls) == sorted(our_controls)
