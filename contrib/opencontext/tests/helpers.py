"""What the tests share: a consumer running in the background, JetStream
calls, and waiting for a state with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from chatbuf_opencontext import BatchConsumer, ConsumerConfig
from chatbuf_opencontext.natsproto import Connection, js_api, js_publish

DEADLINE = 60.0  # seconds; generous: the machine may be loaded
PREFIX = "opencontext.chat"


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while True:
        if await check():
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        await asyncio.sleep(0.05)


async def nonempty(xs: list) -> bool:
    return bool(xs)


@contextlib.asynccontextmanager
async def running(consumer: BatchConsumer) -> AsyncIterator[BatchConsumer]:
    task = asyncio.ensure_future(consumer.run())
    try:
        async def ready() -> bool:
            if task.done():
                task.result()  # raises what ended it
                raise AssertionError("consumer.run() returned before it was ready")
            return consumer.ready.is_set()
        await wait_for("the consumer to pull", ready)
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, DEADLINE)


def config(nats_url: str, **kw: Any) -> ConsumerConfig:
    base = dict(nats_url=nats_url, nak_delay=0.2, nak_max_delay=1.0, pull_expires=1.0)
    base.update(kw)
    return ConsumerConfig(**base)


async def create_flushed_stream(conn: Connection) -> None:
    """CHAT_FLUSHED as a worker creates it (the tests without a worker need it)."""
    await js_api(conn, "$JS.API.STREAM.CREATE.CHAT_FLUSHED", {
        "name": "CHAT_FLUSHED", "subjects": [f"{PREFIX}.flushed.>"], "retention": "limits",
        "storage": "file", "duplicate_window": 120 * 10**9, "num_replicas": 1,
    })


async def consumer_info(conn: Connection, durable: str = "opencontext-processor") -> dict:
    return await js_api(conn, f"$JS.API.CONSUMER.INFO.CHAT_FLUSHED.{durable}", None)


async def all_acked(conn: Connection) -> bool:
    info = await consumer_info(conn)
    return info["num_ack_pending"] == 0 and info["num_pending"] == 0


def example_batch(object_id: str = "alice:phone:bot#42", **overrides: Any) -> dict:
    """The contract's "Batch out" example, filled in."""
    turns = [
        {"role": "user", "content": "hi", "timestamp": "2026-11-26T09:59:58.5Z"},
        {"role": "assistant", "content": "hello, alice", "timestamp": "2026-11-26T09:59:59.25Z"},
    ]
    batch = {
        "batch_id": object_id, "object_id": object_id, "source": "chat_log", "content_format": "text",
        "user_id": "alice", "device_id": "phone", "agent_id": None,
        "reason": "size", "fencing_token": 42, "create_time": "2026-11-26T10:00:00.123456Z",
        "message_count": 2, "roles": ["assistant", "user"],
        "content_text": json.dumps(turns, ensure_ascii=False),
        "additional_info": {"message_count": 2, "roles": ["assistant", "user"], "batch_id": object_id,
                            "reason": "size", "fencing_token": 42},
        "messages": [
            {"message_id": f"m{i}", "seq": 1017 + i, "role": t["role"], "content": t["content"],
             "timestamp": t["timestamp"], "received_at": "2026-11-26T10:00:00.1Z", "metadata": {}}
            for i, t in enumerate(turns)
        ],
    }
    batch.update(overrides)
    return batch


async def publish_batch(conn: Connection, body: Any, subject: Optional[str] = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await js_publish(conn, subject or f"{PREFIX}.flushed.alice.phone._", data)
