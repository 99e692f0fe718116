"""The built-in dissectors, in the order they are tried (after port hints).

Apart from worker/dissectors/__init__.py so that importing one dissector (they all import
worker.dissectors.base) does not load them all, and so that the shards' fork server can import
them once (worker.shard_server.PRELOAD): every shard forked from it then has them, instead of
each importing (and, without .pyc, compiling) all of them again after its fork.
"""

from __future__ import annotations

from worker.dissectors.amqp import AmqpDissector
from worker.dissectors.base import Dissector
from worker.dissectors.dns import DnsDissector
from worker.dissectors.http1 import Http1Dissector
from worker.dissectors.http2 import Http2Dissector
from worker.dissectors.kafka import KafkaDissector
from worker.dissectors.mqtt import MqttDissector
from worker.dissectors.mysql import MysqlDissector
from worker.dissectors.postgres import PostgresDissector
from worker.dissectors.redis import RedisDissector
from worker.dissectors.tls import TlsDissector
from worker.dissectors.upgrades import upgrade_session


def builtin() -> list[Dissector]:
    return [
        AmqpDissector(),
        Http1Dissector(upgrade_hook=upgrade_session),
        RedisDissector(),
        TlsDissector(),
        DnsDissector(),
        MqttDissector(),
        Http2Dissector(),
        PostgresDissector(),
        MysqlDissector(),
        KafkaDissector(),
    ]
