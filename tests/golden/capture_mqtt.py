"""Regenerate tests/golden/mqtt/*.pcap: paho-mqtt against the Mosquitto on 127.0.0.1:1883.

    .venv/bin/python tests/golden/capture_mqtt.py      (as root; then UPDATE_GOLDEN=1 tests)

v311.pcap (MQTTv311) and v5.pcap (MQTTv5), one connection each: CONNECT, SUBSCRIBE to the
run's own topics, PUBLISH at QoS 0, 1 and 2 (received back through the subscription, so the
broker's deliveries and their acknowledgements are in the capture too), a retained message
cleared afterwards, UNSUBSCRIBE, DISCONNECT. Topic names are unique per run.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, fixed, record_all  # noqa: E402

PORT = 1883


def session(protocol: int) -> None:
    tag = uuid.uuid4().hex[:8]
    base = f"golden/{tag}"
    received: list[str] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"golden-{tag}",
                         protocol=protocol)
    client.username_pw_set("golden", "secret")

    def on_message(_client, _userdata, message) -> None:
        received.append(message.topic)
        if len(received) == 3:
            done.set()
    client.on_message = on_message
    properties = None
    if protocol == mqtt.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        properties.UserProperty = [("trace-id", "abc")]
    client.connect("127.0.0.1", PORT, keepalive=30)
    client.loop_start()
    try:
        client.subscribe([(f"{base}/sensors/+", 2), (f"{base}/alerts", 1)])
        sub = client.subscribe(f"{base}/sensors/#", qos=1)
        for qos in (0, 1, 2):
            info = client.publish(f"{base}/sensors/{qos}", f'{{"t": {20 + qos}}}', qos=qos,
                                  properties=properties)
            info.wait_for_publish(10)
        if not done.wait(10):
            raise RuntimeError(f"received only {received}")
        retained = client.publish(f"{base}/state", "on", qos=1, retain=True)
        retained.wait_for_publish(10)
        client.publish(f"{base}/state", b"", qos=1, retain=True).wait_for_publish(10)
        result, mid = client.unsubscribe([f"{base}/sensors/+", f"{base}/sensors/#",
                                          f"{base}/alerts"])
        del sub, result, mid
    finally:
        client.disconnect()
        client.loop_stop()


def scenarios() -> AbstractContextManager[list[Scenario]]:
    return fixed(Scenario(GOLDEN / "mqtt" / "v311.pcap", f"tcp port {PORT}", lambda: session(mqtt.MQTTv311)),
                 Scenario(GOLDEN / "mqtt" / "v5.pcap", f"tcp port {PORT}", lambda: session(mqtt.MQTTv5)))


if __name__ == "__main__":
    record_all(scenarios)
