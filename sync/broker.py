"""Which Dramatiq broker carries the outbox: Redis in production, RabbitMQ optionally, in-memory for the demo.

    redis://host:6379/0   RedisBroker (the default)
    amqp://user:pw@host   RabbitmqBroker (needs `pika`)
    stub://               StubBroker, in-process (demo, embedded single box)
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker


def make_broker(url: str) -> dramatiq.Broker:
    if url.startswith("stub:"):
        return StubBroker()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    raise ValueError(f"unsupported broker URL {url!r}; use redis://..., amqp://... or stub://")
