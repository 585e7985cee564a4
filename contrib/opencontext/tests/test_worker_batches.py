"""Batches that a real chatbuf worker made, read by the consumer."""

from __future__ import annotations

import asyncio
import datetime
import json

import pytest

from chatbuf_opencontext import BatchConsumer, default_model
from chatbuf_opencontext.natsproto import Connection, JSAPIError, js_api, js_publish
from helpers import PREFIX, config, running, wait_for
from rawcontext import RawContextProperties


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_worker_batches_reach_the_processor_as_raw_context_properties(worker, nats_url, shanghai_time):
    conversations = {("alice", "phone", "bot"): 6, ("bob", "_", "_"): 3}  # CHAT_BUFFER_SIZE=3
    sent = {}  # (user, device, agent) -> [(role, content, client timestamp or None)]
    for conv, n in conversations.items():
        sent[conv] = [("user" if i % 2 == 0 else "assistant", f"héllo 你好 {conv[0]} {i}",
                       f"2026-11-26T10:00:0{i}.5+08:00" if i % 2 == 0 else None) for i in range(n)]

    async def body():
        handed = []
        raw = {}

        async def callback(ctx):
            handed.append(ctx)

        conn = await Connection.connect(nats_url)
        try:
            async def chat_in_exists():
                try:
                    await js_api(conn, "$JS.API.STREAM.INFO.CHAT_IN", None)
                    return True
                except JSAPIError:
                    return False
            await wait_for(f"the worker to create CHAT_IN (worker log: {worker})", chat_in_exists)
            _, flushed = conn.subscribe(f"{PREFIX}.flushed.>")

            consumer = BatchConsumer(callback, config(nats_url))
            async with running(consumer):
                for (user, device, agent), msgs in sent.items():
                    for i, (role, content, ts) in enumerate(msgs):
                        msg = {"role": role, "content": content, "message_id": f"{user}-m{i}"}
                        if ts is not None:
                            msg["timestamp"] = ts
                        await js_publish(conn, f"{PREFIX}.in.{user}.{device}.{agent}",
                                         json.dumps(msg, ensure_ascii=False).encode(),
                                         headers={"Nats-Msg-Id": f"{user}-m{i}"})

                async def three_batches():
                    while not flushed.empty():
                        m = flushed.get_nowait()
                        doc = json.loads(m.data)
                        raw[doc.get("object_id") or doc.get("batch_id")] = (m.data, doc)
                    if consumer.stats.terminated:
                        raise AssertionError("the consumer refused the worker's batches as malformed; "
                                             f"one of them: {next(iter(raw.values()))[0][:600]!r}")
                    return len(handed) == 3 and len(raw) == 3
                await wait_for(f"three batches (worker log: {worker})", three_batches)
        finally:
            await conn.close()
        return handed, raw

    handed, raw = asyncio.run(body())

    got = {}
    for ctx in handed:
        assert isinstance(ctx, default_model())
        data, doc = raw[ctx.object_id]
        # The batch as the worker published it is a RawContextProperties as it is.
        RawContextProperties.model_validate_json(data)
        # What the processor gets validates against the model too.
        RawContextProperties.model_validate(ctx.model_dump(mode="json"))
        assert ctx.content_format == "text" and ctx.source == "chat_log"
        assert ctx.object_id == doc["batch_id"]
        # Naive local time (UTC+8 here), as OpenContext's own capture makes it.
        assert ctx.create_time.tzinfo is None
        assert ctx.create_time == utc(doc["create_time"]).astimezone().replace(tzinfo=None)
        assert ctx.create_time - utc(doc["create_time"]).replace(tzinfo=None) == datetime.timedelta(hours=8)
        conv = (ctx.user_id or "_", ctx.device_id or "_", ctx.agent_id or "_")
        assert conv in sent, conv
        turns = json.loads(ctx.content_text)
        assert isinstance(turns, list) and len(turns) == 3
        for turn, m in zip(turns, doc["messages"]):
            assert set(turn) == {"role", "content", "timestamp"}, turn
            assert turn["timestamp"] == (m.get("timestamp") or m["received_at"])
        assert ctx.additional_info["message_count"] == 3
        assert ctx.additional_info["roles"] == sorted({t["role"] for t in turns})
        got.setdefault(conv, []).extend((t["role"], t["content"], t["timestamp"]) for t in turns)

    # Ids not given ("_") are None, not "_".
    bob = [ctx for ctx in handed if ctx.user_id == "bob"]
    assert len(bob) == 1 and bob[0].device_id is None and bob[0].agent_id is None
    alice = [ctx for ctx in handed if ctx.user_id == "alice"]
    assert len(alice) == 2 and all(c.device_id == "phone" and c.agent_id == "bot" for c in alice)
    # Every message once, in order, with the client's timestamp where it gave one.
    for conv, msgs in sent.items():
        assert [(r, c) for r, c, _ in got[conv]] == [(r, c) for r, c, _ in msgs]
        for (_, _, ts_got), (_, _, ts_sent) in zip(got[conv], msgs):
            if ts_sent is not None:
                assert ts_got == ts_sent
