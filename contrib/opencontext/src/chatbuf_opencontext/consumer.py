"""A durable JetStream pull consumer that hands chatbuf's batches to OpenContext.

Each batch published to CHAT_FLUSHED (`<prefix>.flushed.>`) is validated
into RawContextProperties and handed to a callback, OpenContext's processor:

- acked after the callback succeeded;
- nak'd with a delay that grows with the number of deliveries when the
  callback raised or returned False, so the batch comes again;
- terminated (+TERM, never redelivered; it stays in the stream) with an
  error log when it is not a chat-log batch at all: not JSON, or missing what
  the processor reads. Redelivering it could never succeed.

Batches are handed one at a time, in the order the consumer receives them.
A batch whose object_id was handed successfully within the last
`recent_ids` batches is acked without being handed again (a redelivery after
a lost ack, or a batch published twice). That set lives in memory: exactly
once across restarts of this process needs the processor to remember the
object_ids it stored.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Type, Union

from pydantic import BaseModel, ValidationError

from .model import default_model
from .natsproto import (
    ConnectionClosed,
    Connection,
    JSAPIError,
    Msg,
    NATSError,
    RequestTimeout,
    js_api,
)

log = logging.getLogger("chatbuf_opencontext")

Callback = Callable[[Any], Union[Awaitable[Any], Any]]

# JetStream API error codes.
_CONSUMER_NOT_FOUND = 10014
_STREAM_NOT_FOUND = 10059


@dataclass
class ConsumerConfig:
    """Settings of a BatchConsumer; the defaults fit a default chatbuf."""

    nats_url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "opencontext.chat"  # chatbuf's CHAT_SUBJECT_PREFIX
    stream: str = "CHAT_FLUSHED"
    durable: str = "opencontext-processor"
    # A batch not acked within ack_wait seconds is delivered again; while the
    # callback runs the consumer tells the server it is still working on it.
    ack_wait: float = 60.0
    # Delay before a failed batch comes again: nak_delay * 2**(deliveries-1),
    # at most nak_max_delay seconds.
    nak_delay: float = 1.0
    nak_max_delay: float = 300.0
    recent_ids: int = 10000
    pull_expires: float = 5.0  # seconds one pull waits for a batch
    reconnect_max_delay: float = 10.0


class MalformedBatch(ValueError):
    """A message on CHAT_FLUSHED that is not a chat-log batch."""


_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: Union[str, datetime.datetime]) -> datetime.datetime:
    """An RFC 3339 time as naive local time, as OpenContext's capture makes create_time.

    Accepts `Z`, any number of fraction digits (kept to microseconds) and
    offsets with or without a colon, which Python 3.10's fromisoformat does
    not. A time without an offset is taken as UTC (chatbuf writes UTC).
    """
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        m = _TIME.match(value.strip()) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        date, clock, frac, tz = m.groups()
        text = f"{date}T{clock}"
        if frac:
            text += "." + (frac + "000000")[:6]
        if tz is None or tz in ("Z", "z"):
            text += "+00:00"
        elif ":" not in tz:
            text += tz[:3] + ":" + tz[3:]
        else:
            text += tz
        dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone().replace(tzinfo=None)


def parse_batch(data: bytes, model: Optional[Type[BaseModel]] = None) -> BaseModel:
    """Validates one batch's JSON into the model (OpenContext's RawContextProperties
    by default), with create_time as naive local time. Raises MalformedBatch."""
    model = model or default_model()
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise MalformedBatch(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise MalformedBatch(f"not a JSON object but {type(doc).__name__}")
    # What the processor reads must be there: a model whose content_text may be
    # None would validate a batch without it and prompt with the word "None".
    for name in ("object_id", "content_text", "create_time"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise MalformedBatch(f"{name} missing or not a non-empty string")
    if doc.get("source") != "chat_log":
        raise MalformedBatch(f"source is {doc.get('source')!r}, not 'chat_log'")
    if doc.get("content_format") != "text":
        raise MalformedBatch(f"content_format is {doc.get('content_format')!r}, not 'text'")
    try:
        turns = json.loads(doc["content_text"])
    except ValueError as err:
        raise MalformedBatch(f"content_text is not JSON: {err}") from None
    if not isinstance(turns, list) or not turns:
        raise MalformedBatch("content_text is not a non-empty JSON array")
    try:
        doc["create_time"] = parse_time(doc["create_time"])
    except ValueError as err:
        raise MalformedBatch(f"create_time: {err}") from None
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise MalformedBatch(f"not a valid {model.__name__}: {err}") from None


def _delivered(reply: str) -> int:
    """The delivery count from a JetStream ack subject (1 when unknown)."""
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...
            return int(tokens[4])
        if len(tokens) >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>...
            return int(tokens[6])
    except ValueError:
        pass
    return 1


def _stream_seq(reply: str) -> str:
    tokens = reply.split(".")
    if len(tokens) == 9:
        return tokens[5]
    if len(tokens) >= 11:
        return tokens[7]
    return "?"


class Stats:
    """Counts since the consumer started."""

    def __init__(self) -> None:
        self.handled = 0  # batches the callback took (acked)
        self.failed = 0  # callback failures (nak'd)
        self.duplicates = 0  # acked without handing: object_id seen recently
        self.terminated = 0  # malformed batches

    def __repr__(self) -> str:
        return (f"Stats(handled={self.handled}, failed={self.failed}, "
                f"duplicates={self.duplicates}, terminated={self.terminated})")


class BatchConsumer:
    """Pulls chatbuf batches from CHAT_FLUSHED and hands each to `callback`.

    `callback(ctx)` gets one RawContextProperties. It may be a coroutine
    function (awaited) or a plain function (run in a thread, so that a slow
    processor does not stall the connection). It fails by raising or by
    returning False, as OpenContext's _handle_captured_context does.
    """

    def __init__(self, callback: Callback, config: Optional[ConsumerConfig] = None, *,
                 model: Optional[Type[BaseModel]] = None) -> None:
        self.callback = callback
        self.config = config or ConsumerConfig()
        self.model = model or default_model()
        self.stats = Stats()
        self.ready = asyncio.Event()  # set while the durable exists and pulls run
        self._stop = asyncio.Event()
        self._recent: "OrderedDict[str, None]" = OrderedDict()

    def stop(self) -> None:
        """Makes run() return after the batch being handled, if any."""
        self._stop.set()

    async def run(self) -> None:
        """Consumes until stop(); reconnects with backoff when NATS fails."""
        cfg = self.config
        backoff = 0.5
        while not self._stop.is_set():
            try:
                conn = await Connection.connect(cfg.nats_url, name=f"chatbuf-opencontext:{cfg.durable}")
            except (OSError, NATSError, asyncio.TimeoutError) as err:
                log.warning("chatbuf consumer: cannot connect to NATS, retrying: url=%s error=%s retry_in=%.1fs",
                            cfg.nats_url, err, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_delay)
                continue
            try:
                await self._serve(conn)
                backoff = 0.5
            except (ConnectionClosed, RequestTimeout, OSError) as err:
                log.warning("chatbuf consumer: NATS connection lost, reconnecting: error=%s", err)
            except (NATSError, ValueError) as err:
                # A JetStream API refusal (permissions, a conflicting consumer) or a
                # garbled answer: said loudly, then tried again on a new connection.
                log.error("chatbuf consumer: JetStream refused, retrying: stream=%s durable=%s error=%s",
                          cfg.stream, cfg.durable, err)
            finally:
                self.ready.clear()
                await conn.close()
            if not self._stop.is_set():
                await self._sleep(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_delay)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _ensure_consumer(self, conn: Connection) -> None:
        """Waits for the stream and creates the durable consumer when it is missing."""
        cfg = self.config
        waited = False
        while not self._stop.is_set():
            try:
                await js_api(conn, f"$JS.API.CONSUMER.INFO.{cfg.stream}.{cfg.durable}", None)
                return
            except JSAPIError as err:
                if err.err_code == _STREAM_NOT_FOUND:
                    if not waited:
                        log.warning("chatbuf consumer: stream %s not found; waiting for a chatbuf worker "
                                    "to create it", cfg.stream)
                        waited = True
                    await self._sleep(1.0)
                    continue
                if err.err_code != _CONSUMER_NOT_FOUND:
                    raise
            config = {
                "durable_name": cfg.durable,
                "deliver_policy": "all",
                "ack_policy": "explicit",
                "ack_wait": int(cfg.ack_wait * 1e9),
                "max_deliver": -1,
                "filter_subject": f"{cfg.subject_prefix}.flushed.>",
                "replay_policy": "instant",
                "max_ack_pending": 1000,
            }
            try:
                await js_api(conn, f"$JS.API.CONSUMER.DURABLE.CREATE.{cfg.stream}.{cfg.durable}",
                             {"stream_name": cfg.stream, "config": config})
                log.info("chatbuf consumer: created durable consumer: stream=%s durable=%s filter=%s",
                         cfg.stream, cfg.durable, config["filter_subject"])
                return
            except JSAPIError as err:
                if err.err_code == _STREAM_NOT_FOUND:
                    continue
                raise

    async def _serve(self, conn: Connection) -> None:
        cfg = self.config
        await self._ensure_consumer(conn)
        inbox = conn.new_inbox()
        _, queue = conn.subscribe(inbox)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{cfg.stream}.{cfg.durable}"
        pull = json.dumps({"batch": 1, "expires": int(cfg.pull_expires * 1e9)}).encode()
        self.ready.set()
        log.info("chatbuf consumer: pulling batches: stream=%s durable=%s", cfg.stream, cfg.durable)
        while not self._stop.is_set():
            conn.publish(next_subject, pull, reply=inbox)
            msg = await self._next(queue, cfg.pull_expires + 5.0)
            if conn.is_closed:
                raise ConnectionClosed("nats: connection closed")
            if msg is None:
                if self._stop.is_set():
                    return
                # No answer at all, not even "no messages": check the consumer.
                await self._ensure_consumer(conn)
                continue
            if msg.status is not None:
                if msg.status in (404, 408, 100):  # no messages, pull expired, heartbeat
                    continue
                log.warning("chatbuf consumer: pull answered %d %s; checking the consumer",
                            msg.status, msg.description)
                await self._ensure_consumer(conn)
                continue
            await self._handle(conn, msg)

    async def _next(self, queue: asyncio.Queue, timeout: float) -> Optional[Msg]:
        get = asyncio.ensure_future(queue.get())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({get, stop}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if get in done:
            return get.result()
        get.cancel()
        return None

    async def _handle(self, conn: Connection, msg: Msg) -> None:
        cfg = self.config
        delivered = _delivered(msg.reply)
        seq = _stream_seq(msg.reply)
        try:
            ctx = parse_batch(msg.data, self.model)
        except MalformedBatch as err:
            self.stats.terminated += 1
            log.error("chatbuf consumer: malformed batch terminated (not redelivered; it stays in %s): "
                      "subject=%s stream_seq=%s error=%s", cfg.stream, msg.subject, seq, err)
            conn.publish(msg.reply, b"+TERM")
            await conn.flush()
            return
        object_id = getattr(ctx, "object_id")
        if object_id in self._recent:
            self.stats.duplicates += 1
            self._recent.move_to_end(object_id)
            log.info("chatbuf consumer: batch already handed, acked again: object_id=%s stream_seq=%s "
                     "delivered=%d", object_id, seq, delivered)
            conn.publish(msg.reply, b"+ACK")
            await conn.flush()
            return
        progress = asyncio.ensure_future(self._in_progress(conn, msg.reply))
        error: Optional[str] = None
        try:
            if await self._call(ctx) is False:
                error = "callback returned False"
        except Exception as err:  # the processor's failure: nak and retry
            error = f"{type(err).__name__}: {err}"
        finally:
            progress.cancel()
        if error is not None:
            self.stats.failed += 1
            delay = min(cfg.nak_delay * (2 ** min(delivered - 1, 30)), cfg.nak_max_delay)
            log.warning("chatbuf consumer: processor failed, batch will come again: object_id=%s "
                        "delivered=%d retry_in=%.1fs error=%s", object_id, delivered, delay, error)
            conn.publish(msg.reply, b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode())
            await conn.flush()
            return
        self._remember(object_id)
        self.stats.handled += 1
        conn.publish(msg.reply, b"+ACK")
        await conn.flush()
        log.debug("chatbuf consumer: batch handed: object_id=%s stream_seq=%s", object_id, seq)

    async def _call(self, ctx: BaseModel) -> Any:
        cb = self.callback
        if inspect.iscoroutinefunction(cb) or inspect.iscoroutinefunction(getattr(cb, "__call__", None)):
            return await cb(ctx)
        result = await asyncio.to_thread(cb, ctx)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _in_progress(self, conn: Connection, reply: str) -> None:
        """Keeps a batch from being redelivered while the callback works on it."""
        interval = max(self.config.ack_wait / 3, 0.5)
        try:
            while True:
                await asyncio.sleep(interval)
                conn.publish(reply, b"+WPI")
        except (ConnectionClosed, asyncio.CancelledError):
            pass

    def _remember(self, object_id: str) -> None:
        self._recent[object_id] = None
        self._recent.move_to_end(object_id)
        while len(self._recent) > self.config.recent_ids:
            self._recent.popitem(last=False)
