"""Protocol dissectors: one module per protocol behind the interface of base.py.

A new protocol is a module with a Dissector (a detect function, and a session that reads each
direction through worker.dissectors.stream) and one line in registry(): docs/DISSECTORS.md.
"""

from __future__ import annotations

from worker.dissectors.base import Dissector


def registry() -> list[Dissector]:
    """The built-in dissectors, in the order they are tried (after port hints)."""
    from worker.dissectors.amqp import AmqpDissector
    from worker.dissectors.dns import DnsDissector
    from worker.dissectors.http1 import Http1Dissector
    from worker.dissectors.mysql import MysqlDissector
    from worker.dissectors.mqtt import MqttDissector
    from worker.dissectors.http2 import Http2Dissector
    from worker.dissectors.upgrades import upgrade_session
    from worker.dissectors.redis import RedisDissector
    from worker.dissectors.kafka import KafkaDissector
    from worker.dissectors.postgres import PostgresDissector
    from worker.dissectors.tls import TlsDissector

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


def fallback() -> Dissector:
    """The dissector for flows no registered one claims: a generic tcp/udp entry per flow."""
    from worker.dissectors.generic import GenericDissector

    return GenericDissector()
