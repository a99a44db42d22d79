"""Dramatiq's RedisBroker, with idle consumers woken by each enqueue instead of polling with back-off.

Dramatiq's Redis consumer sleeps between empty fetches, doubling the sleep up to the worker timeout
(1 s here), so a text queued on a quiet worker waited up to a second before anything fetched it. Here
every enqueue also pushes a token on a per-queue wake list, and a consumer that found its queue empty
blocks on that list (BLPOP) for up to the worker timeout (at most 1 s), then fetches again. A token taken by a process
that then finds nothing is harmless (it fetches, finds nothing, waits again); tokens nobody waits for are
trimmed. Messages themselves are stored, fetched, acked, requeued and recovered exactly as Dramatiq's own
Redis broker does it: only the wait between fetches changes.

Recovery from a killed worker is quicker than Dramatiq's defaults: the messages a worker held (prefetched,
running, or delayed retries waiting in its memory) go back to their queue once its heartbeat is
HEARTBEAT_TIMEOUT_MS old, found by the broker's maintenance, which each process runs every
MAINTENANCE_EVERY_S seconds instead of on one command in a thousand at random. With the defaults (60 s,
1/1000) a SIGKILLed worker's jobs waited minutes, up to the relay's 15 minutes (bench/chaos.py found it).
A live worker sends a command at least every second (each consumer's fetch or wait), so a message is
only recovered from a live worker that lost Redis for the whole timeout; its second delivery is then a
no-op at the claim.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import MAINTENANCE_COMMAND_BLACKLIST, RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

WAKE_BACKLOG = 1000  # tokens kept for consumers that are busy or not yet started
MIN_WAIT_MS, MAX_WAIT_MS = 10, 1000  # BLPOP's wait: no busy loop on a tiny worker timeout, and always well
# under the client's socket timeout (a BLPOP outliving it is a TimeoutError that restarts the consumer)
HEARTBEAT_TIMEOUT_MS = 15_000  # a worker silent this long is dead: its messages go back to the queue
MAINTENANCE_EVERY_S = 5.0  # how often each process looks for dead workers' messages
FULL_PAUSE_S = 0.002  # every prefetched message is still running: a worker thread frees up soon


class WakingConsumer(_RedisConsumer):
    def __next__(self) -> MessageProxy | None:
        try:
            if not self.message_cache:
                if self.outstanding_message_count >= self.prefetch:
                    time.sleep(FULL_PAUSE_S)
                    return None
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    wait_ms = min(max(self.timeout, MIN_WAIT_MS), MAX_WAIT_MS)
                    with contextlib.suppress(redis.TimeoutError):
                        self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=wait_ms / 1000)
                    return None  # the consumer thread handles its delayed messages, then fetches again
            message = Message.decode(self.message_cache.pop(0))
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None


class WakingRedisBroker(RedisBroker):
    def __init__(self, *args, heartbeat_timeout: int = HEARTBEAT_TIMEOUT_MS,
                 maintenance_every: float = MAINTENANCE_EVERY_S, **kwargs) -> None:
        super().__init__(*args, heartbeat_timeout=heartbeat_timeout, **kwargs)
        self.maintenance_every = maintenance_every
        self._last_maintenance = float("-inf")  # the first command of a (re)started process looks
        self._maintenance_lock = threading.Lock()

    def _should_do_maintenance(self, command: str) -> int:
        if command in MAINTENANCE_COMMAND_BLACKLIST:
            return 0
        now = time.monotonic()
        with self._maintenance_lock:
            if now - self._last_maintenance < self.maintenance_every:
                return 0
            self._last_maintenance = now
            return 1

    @property
    def consumer_class(self):
        return WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        return self.enqueue_many([(message, delay)])[0]

    def enqueue_many(self, messages: list[tuple[Message, int | None]]) -> list[Message]:
        """Store the messages as Dramatiq's own enqueue does, and push a wake token for each one due now, all in
        one round trip to Redis (Dramatiq's enqueue is a round trip per message; the wake token was one more)."""
        prepared = [(_for_redis(message, delay), delay) for message, delay in messages]
        for message, delay in prepared:
            self.emit_before("enqueue", message, delay)
        try:
            self._store(prepared)
        except redis.exceptions.NoScriptError:  # Redis restarted and forgot the script: load it, then again
            self.client.script_load(self.scripts["dispatch"].script)
            self._store(prepared)
        for message, delay in prepared:
            self.emit_after("enqueue", message, delay)
        return [message for message, _ in prepared]

    def _store(self, prepared: list[tuple[Message, int | None]]) -> None:
        # EVALSHA by the script's digest, not redis-py's Script in a pipeline: that asks Redis whether its scripts
        # exist (SCRIPT EXISTS) before every pipeline, a second round trip on every enqueue.
        sha, keys = self.scripts["dispatch"].sha, [self.namespace]
        woken: dict[str, int] = {}
        with self.client.pipeline(transaction=False) as pipe:
            for message, delay in prepared:
                pipe.evalsha(sha, len(keys), *keys,
                             "enqueue", current_millis(), message.queue_name, self.broker_id, self.heartbeat_timeout,
                             self.dead_message_ttl, self._should_do_maintenance("enqueue"), self._max_unpack_size(),
                             message.options["redis_message_id"], message.encode())
                if delay is None:  # delayed messages sit in the delay queue; its consumer polls on its own timeout
                    woken[message.queue_name] = woken.get(message.queue_name, 0) + 1
            for queue_name, count in woken.items():
                key = self.wake_key(queue_name)
                pipe.lpush(key, *[1] * min(count, WAKE_BACKLOG))
                pipe.ltrim(key, 0, WAKE_BACKLOG - 1)
            pipe.execute()


def _for_redis(message: Message, delay: int | None) -> Message:
    """As RedisBroker.enqueue copies it: a fresh Redis id (a retried message is stored anew), and for a delay
    the delay queue and the time it is due."""
    message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
    if delay is not None:
        message = message.copy(queue_name=dq_name(message.queue_name),
                               options={"eta": current_millis() + delay})
    return message


def queues_lost(broker) -> "BrokerMemory":
    """A check, run by the relay each pass, that says when the broker has lost every message it held.

    Redis here keeps nothing on disk: restarted (or flushed), its queues are empty, while the outbox still
    shows their rows as enqueued. The broker keeps a marker; while it is missing the check answers True, and
    the relay sets it (`remember()`) only after it has forgotten the rows' enqueued marks. Setting it in the
    check itself (as before) lost the news when the process died between the two — a worker SIGKILLed
    right after Redis came back left 1,600 texts waiting for the 15-minute staleness rule (bench/chaos.py).
    Two processes that both see it missing both forget: the second enqueue of a row is a no-op at its claim.
    A broker with no such memory to lose (stub, RabbitMQ's durable queues) never answers True.
    """
    return BrokerMemory(broker)


class BrokerMemory:
    def __init__(self, broker) -> None:
        self._client = broker.client if isinstance(broker, RedisBroker) else None
        self._key = f"{broker.namespace}:memory" if self._client is not None else ""

    def __call__(self) -> bool:
        return self._client is not None and not self._client.exists(self._key)

    def remember(self) -> None:
        if self._client is not None:
            self._client.set(self._key, uuid.uuid4().hex)
