"""Regenerate tests/golden/amqp/*.pcap: pika against the RabbitMQ on 127.0.0.1:5672 (guest).

    .venv/bin/python tests/golden/capture_amqp.py      (as root; then UPDATE_GOLDEN=1 tests)

basic.pcap, one connection: declare an exchange and a queue, bind them, publish with
properties (content type, delivery mode, headers) plain and in confirm mode, basic.get, a
consumer (basic.consume, deliveries, acks, basic.cancel), a passive declare of a missing queue
(the broker closes the channel: 404 NOT_FOUND), clean-up, close. Names are unique per run.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
import uuid
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.golden import GOLDEN, Scenario, fixed, record_all  # noqa: E402

PORT = 5672


def traffic() -> None:
    tag = uuid.uuid4().hex[:8]
    exchange, queue = f"orders-{tag}", f"jobs-{tag}"
    params = pika.ConnectionParameters("127.0.0.1", PORT, credentials=pika.PlainCredentials(
        "guest", "guest"), heartbeat=0, client_properties={"connection_name": "golden"})
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="topic")
    channel.queue_declare(queue, arguments={"x-message-ttl": 60000})
    channel.queue_bind(queue, exchange, routing_key="orders.*")
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 headers={"trace-id": "abc", "attempt": 1},
                                 message_id="m-1")
    channel.basic_publish(exchange, "orders.created", b'{"id": 1, "item": "book"}', props)
    channel.basic_publish(exchange, "orders.paid", b'{"id": 1}',
                          pika.BasicProperties(content_type="application/json"))
    channel.basic_publish("", queue, b"x" * 3000)      # default exchange, larger body
    method, _properties, _body = channel.basic_get(queue, auto_ack=False)
    while method is None:
        method, _properties, _body = channel.basic_get(queue, auto_ack=False)
    channel.basic_ack(method.delivery_tag)
    received: list[bytes] = []

    def on_message(ch, deliver, _props, body) -> None:
        received.append(body)
        ch.basic_ack(deliver.delivery_tag)
        if len(received) == 2:
            ch.stop_consuming()
    channel.basic_consume(queue, on_message, consumer_tag=f"golden-{tag}")
    channel.start_consuming()
    confirm = connection.channel()
    confirm.confirm_delivery()
    confirm.basic_publish(exchange, "orders.shipped", b'{"id": 1}',
                          pika.BasicProperties(delivery_mode=2))
    try:
        confirm.queue_declare(f"missing-{tag}", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass
    channel.queue_purge(queue)
    channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    channel.close()
    connection.close()


def scenarios() -> AbstractContextManager[list[Scenario]]:
    return fixed(Scenario(GOLDEN / "amqp" / "basic.pcap", f"tcp port {PORT}", traffic))


if __name__ == "__main__":
    record_all(scenarios)
