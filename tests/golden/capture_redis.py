"""Regenerate tests/golden/redis/*.pcap: redis-py against the Redis server on 127.0.0.1:6379.

    .venv/bin/python tests/golden/capture_redis.py      (as root; then UPDATE_GOLDEN=1 tests)

One capture per protocol version: resp2.pcap (protocol=2) and resp3.pcap (protocol=3, HELLO 3
first). Both run the same traffic under the key prefix "shark:golden:" and delete it after:
SET/GET/DEL/INCR, a missing key, an error (INCR on a string), a pipeline of 10 commands,
MULTI/EXEC, HSET/HGETALL (a map in RESP3) and a pub/sub message.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, fixed, record_all  # noqa: E402

PREFIX = "shark:golden:"


def traffic(protocol: int) -> None:
    r = redis.Redis(host="127.0.0.1", port=6379, protocol=protocol, decode_responses=True,
                    single_connection_client=True)
    try:
        r.set(PREFIX + "user:42", "alice")
        r.get(PREFIX + "user:42")
        r.get(PREFIX + "missing")
        r.execute_command("INCR", PREFIX + "counter")    # redis-py's incr() sends INCRBY
        try:
            r.execute_command("INCR", PREFIX + "user:42")   # ERR value is not an integer
        except redis.ResponseError:
            pass
        pipe = r.pipeline(transaction=False)
        for n in range(10):
            pipe.set(f"{PREFIX}pipe:{n}", n)
        pipe.execute()
        tx = r.pipeline(transaction=True)        # MULTI ... EXEC
        tx.incr(PREFIX + "counter")
        tx.get(PREFIX + "user:42")
        tx.expire(PREFIX + "counter", 60)
        tx.execute()
        r.hset(PREFIX + "hash", mapping={"name": "bob", "age": "30"})
        r.hgetall(PREFIX + "hash")

        subscriber = redis.Redis(host="127.0.0.1", port=6379, protocol=protocol,
                                 decode_responses=True)
        pubsub = subscriber.pubsub()
        pubsub.subscribe(PREFIX + "news")
        confirmation = pubsub.get_message(timeout=2)
        assert confirmation and confirmation["type"] == "subscribe", confirmation
        r.publish(PREFIX + "news", "hello subscribers")
        deadline = time.monotonic() + 5
        message = None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message and message["data"] == "hello subscribers", message
        pubsub.unsubscribe()
        pubsub.get_message(timeout=2)
        pubsub.close()
        subscriber.close()

        keys = list(r.scan_iter(match=PREFIX + "*"))
        r.delete(*keys)
    finally:
        r.close()


def scenarios() -> AbstractContextManager[list[Scenario]]:
    return fixed(*(Scenario(GOLDEN / "redis" / f"resp{protocol}.pcap", "tcp port 6379",
                            lambda protocol=protocol: traffic(protocol)) for protocol in (2, 3)))


if __name__ == "__main__":
    record_all(scenarios)
