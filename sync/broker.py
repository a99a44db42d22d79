"""Which Dramatiq broker carries the outbox: Redis in production, RabbitMQ optionally, in-memory for the demo.

    redis://host:6379/0   WakingRedisBroker (the default: Dramatiq's RedisBroker, consumers woken on enqueue)
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
        from sync.redis_broker import WakingRedisBroker

        return WakingRedisBroker(url=url)
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    raise ValueError(f"unsupported broker URL {url!r}; use redis://..., amqp://... or stub://")


def ping_for(broker: dramatiq.Broker):
    """A callable that raises when the broker is unreachable (for /readyz); None for the in-memory one."""
    client = getattr(broker, "client", None)  # RedisBroker
    if client is not None:
        return client.ping
    connection = getattr(broker, "connection", None)  # RabbitmqBroker opens it on first use
    if connection is not None and hasattr(broker, "channel"):
        return lambda: broker.channel
    return None

