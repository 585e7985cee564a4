"""The consumer against a real nats-server, with batches written from the
contract's example: nak and redelivery, duplicates, malformed batches."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys

import pytest

from chatbuf_opencontext import BatchConsumer, MalformedBatch, default_model, parse_batch, parse_time
from chatbuf_opencontext.natsproto import Connection
from helpers import (all_acked, config, consumer_info, create_flushed_stream, example_batch,
                     nonempty, publish_batch, running, wait_for)
from rawcontext import RawContextProperties


def test_parse_time_takes_what_python_3_10_fromisoformat_rejects(shanghai_time):
    want = datetime.datetime(2026, 11, 26, 18, 0, 0, 123456)
    for text in ("2026-11-26T10:00:00.123456Z", "2026-11-26T10:00:00.123456789Z",
                 "2026-11-26T11:00:00.123456+01:00", "2026-11-26T11:00:00.1234567+0100",
                 "2026-11-26t10:00:00.123456z"):
        assert parse_time(text) == want, text
    assert parse_time("2026-11-26T10:00:00Z") == datetime.datetime(2026, 11, 26, 18, 0, 0)
    for bad in ("yesterday", "2026-11-26", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_parse_batch_gives_the_contract_example_as_raw_context_properties(shanghai_time):
    ctx = parse_batch(json.dumps(example_batch()).encode())
    # Naive local time, as OpenContext's capture sets create_time.
    assert ctx.create_time == datetime.datetime(2026, 11, 26, 18, 0, 0, 123456)
    assert ctx.create_time.tzinfo is None
    assert ctx.agent_id is None and ctx.user_id == "alice" and ctx.device_id == "phone"
    RawContextProperties.model_validate(ctx.model_dump(mode="json"))
    # The batch as published validates against the model as it is.
    RawContextProperties.model_validate_json(json.dumps(example_batch()))


@pytest.mark.parametrize("doc, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    ({k: v for k, v in example_batch().items() if k != "content_format"}, "content_format"),
    (example_batch(content_text=None), "content_text"),
    (example_batch(content_text="None"), "content_text is not JSON"),
    (example_batch(source="screenshot"), "source"),
    (example_batch(create_time="noon"), "create_time"),
    (example_batch(user_id=7), "not a valid"),
])
def test_parse_batch_refuses_what_the_processor_cannot_read(doc, why):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(MalformedBatch, match=why):
        parse_batch(data)


@pytest.mark.parametrize("failure", ["raises", "returns False"])
def test_failed_callback_naks_and_the_batch_comes_again(nats_url, failure):
    async def body():
        calls = []

        async def callback(ctx):
            calls.append(ctx.object_id)
            if len(calls) == 1:
                if failure == "raises":
                    raise RuntimeError("LLM unavailable")
                return False
            return True

        conn = await Connection.connect(nats_url)
        try:
            await create_flushed_stream(conn)
            consumer = BatchConsumer(callback, config(nats_url))
            async with running(consumer):
                await publish_batch(conn, example_batch("alice:phone:_#1"))

                async def handled():
                    return consumer.stats.handled == 1 and await all_acked(conn)
                await wait_for("the batch to be handled after its nak", handled)
                info = await consumer_info(conn)
            assert calls == ["alice:phone:_#1", "alice:phone:_#1"]
            assert consumer.stats.failed == 1
            assert info["num_redelivered"] == 0 and info["delivered"]["consumer_seq"] == 2
        finally:
            await conn.close()

    asyncio.run(body())


def test_duplicate_object_id_is_handed_once(nats_url):
    async def body():
        calls = []

        async def callback(ctx):
            calls.append(ctx.object_id)

        conn = await Connection.connect(nats_url)
        try:
            await create_flushed_stream(conn)
            consumer = BatchConsumer(callback, config(nats_url))
            async with running(consumer):
                # Published twice without Nats-Msg-Id, so the stream keeps both copies.
                await publish_batch(conn, example_batch("alice:phone:_#1"))
                await publish_batch(conn, example_batch("alice:phone:_#1"))
                await publish_batch(conn, example_batch("alice:phone:_#2"))

                async def done():
                    return consumer.stats.handled + consumer.stats.duplicates == 3 and await all_acked(conn)
                await wait_for("all three copies to be acked", done)
            assert calls == ["alice:phone:_#1", "alice:phone:_#2"]
            assert consumer.stats.duplicates == 1
        finally:
            await conn.close()

    asyncio.run(body())


def test_malformed_batch_is_terminated_with_a_log_and_later_batches_go_on(nats_url, caplog):
    async def body():
        calls = []

        async def callback(ctx):
            calls.append(ctx.object_id)

        conn = await Connection.connect(nats_url)
        try:
            await create_flushed_stream(conn)
            consumer = BatchConsumer(callback, config(nats_url))
            async with running(consumer):
                await publish_batch(conn, b"{not json")
                await publish_batch(conn, {k: v for k, v in example_batch("old#1").items()
                                           if k != "content_format"})
                await publish_batch(conn, example_batch("alice:phone:_#3"))

                async def done():
                    return calls == ["alice:phone:_#3"] and await all_acked(conn)
                await wait_for("the good batch after two malformed ones", done)
                info = await consumer_info(conn)
            assert consumer.stats.terminated == 2
            # Terminated, not redelivered: each was delivered once.
            assert info["delivered"]["consumer_seq"] == 3 and info["num_redelivered"] == 0
        finally:
            await conn.close()

    with caplog.at_level(logging.ERROR, logger="chatbuf_opencontext"):
        asyncio.run(body())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert all("malformed batch terminated" in e for e in errors), errors
    assert "not JSON" in errors[0] and "content_format" in errors[1], errors


def test_slow_processor_keeps_its_batch_from_another_process(nats_url):
    """Two processes on one durable: while one's processor works longer than
    ack_wait, the consumer keeps the batch from being redelivered to the other."""
    async def body():
        calls = []

        async def slow(ctx):
            calls.append(("slow", ctx.object_id))
            await asyncio.sleep(4.0)  # the processor's work, four times ack_wait

        async def other(ctx):
            calls.append(("other", ctx.object_id))

        conn = await Connection.connect(nats_url)
        try:
            await create_flushed_stream(conn)
            first = BatchConsumer(slow, config(nats_url, ack_wait=1.0))
            async with running(first):
                await publish_batch(conn, example_batch("alice:phone:_#1"))
                await wait_for("the slow processor to start", lambda: nonempty(calls))
                second = BatchConsumer(other, config(nats_url, ack_wait=1.0))
                async with running(second):
                    async def done():
                        return first.stats.handled == 1 and await all_acked(conn)
                    await wait_for("the slow processor to finish", done)
                info = await consumer_info(conn)
            assert calls == [("slow", "alice:phone:_#1")]
            assert info["num_redelivered"] == 0
        finally:
            await conn.close()

    asyncio.run(body())


def test_consumer_goes_on_after_nats_restarts(nats_server):
    async def body():
        calls = []

        async def callback(ctx):
            calls.append(ctx.object_id)

        conn = await Connection.connect(nats_server.url)
        await create_flushed_stream(conn)
        consumer = BatchConsumer(callback, config(nats_server.url, reconnect_max_delay=1.0))
        async with running(consumer):
            await publish_batch(conn, example_batch("alice:phone:_#1"))
            await wait_for("the first batch", lambda: nonempty(calls))
            await conn.close()
            nats_server.stop()

            async def not_ready():
                return not consumer.ready.is_set()
            await wait_for("the consumer to notice NATS is gone", not_ready)
            nats_server.start()
            conn = await Connection.connect(nats_server.url)
            try:
                await publish_batch(conn, example_batch("alice:phone:_#2"))

                async def second():
                    return len(calls) == 2 and await all_acked(conn)
                await wait_for("the batch published after the restart", second)
            finally:
                await conn.close()
        assert calls == ["alice:phone:_#1", "alice:phone:_#2"]

    asyncio.run(body())


@pytest.fixture
def fake_opencontext(tmp_path, monkeypatch):
    """An importable `opencontext` package whose RawContextProperties is the
    tests' model under OpenContext's module path."""
    pkg = tmp_path / "opencontext" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "opencontext" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [n for n in sys.modules if n == "opencontext" or n.startswith("opencontext.")]:
        del sys.modules[name]


def test_opencontexts_own_class_is_used_when_installed(fake_opencontext):
    (fake_opencontext / "context.py").write_text("from rawcontext import RawContextProperties\n")
    import rawcontext

    assert default_model() is rawcontext.RawContextProperties
    ctx = parse_batch(json.dumps(example_batch()).encode())
    assert type(ctx) is rawcontext.RawContextProperties


def test_an_installed_opencontext_that_fails_to_import_is_not_hidden(fake_opencontext):
    (fake_opencontext / "context.py").write_text("import opencontext.missing_dependency\n")
    with pytest.raises(ImportError, match="missing_dependency"):
        default_model()
