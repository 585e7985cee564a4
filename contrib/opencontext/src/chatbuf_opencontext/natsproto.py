"""A small asyncio NATS client: what a JetStream pull consumer needs.

It speaks the NATS text protocol (INFO, CONNECT, PING/PONG, SUB, UNSUB,
PUB, HPUB, MSG, HMSG) over one TCP connection: publish, subscribe and
request/reply with headers. It does not reconnect by itself; the consumer
opens a new connection when this one fails. TLS is not supported: a server
that requires it is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Dict, Optional
from urllib.parse import unquote, urlsplit

_CRLF = b"\r\n"


class NATSError(Exception):
    """An error of the connection or of the server."""


class ConnectionClosed(NATSError):
    """The connection is closed; open a new one."""


class RequestTimeout(NATSError):
    """A request got no reply in time."""


@dataclass
class Msg:
    subject: str
    reply: str
    data: bytes
    headers: Dict[str, str] = field(default_factory=dict)
    status: Optional[int] = None  # from an inline status header ("NATS/1.0 408 ...")
    description: str = ""


def _parse_headers(raw: bytes) -> tuple[Optional[int], str, Dict[str, str]]:
    lines = raw.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    status: Optional[int] = None
    description = ""
    parts = first.split(" ", 2)
    if len(parts) >= 2 and parts[1].isdigit():
        status = int(parts[1])
        description = parts[2] if len(parts) > 2 else ""
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return status, description, headers


def _encode_headers(headers: Dict[str, str]) -> bytes:
    out = "NATS/1.0\r\n"
    for name, value in headers.items():
        out += f"{name}: {value}\r\n"
    return (out + "\r\n").encode()


class Connection:
    """One connection to a NATS server."""

    def __init__(self) -> None:
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._read_task: Optional[asyncio.Task] = None
        self._subs: Dict[int, asyncio.Queue] = {}
        self._next_sid = 1
        self._pongs: list[asyncio.Future] = []
        self._closed = asyncio.Event()
        self._error: Optional[BaseException] = None
        self._resp_prefix = ""
        self._resp_sid = 0
        self._resp_futures: Dict[str, asyncio.Future] = {}
        self.server_info: dict = {}

    @classmethod
    async def connect(cls, url: str, *, name: str = "chatbuf-opencontext",
                      timeout: float = 5.0) -> "Connection":
        conn = cls()
        try:
            await asyncio.wait_for(conn._connect(url, name), timeout)
        except BaseException:
            if conn._writer is not None:
                conn._writer.close()
            raise
        return conn

    async def _connect(self, url: str, name: str) -> None:
        if "://" not in url:
            url = "nats://" + url
        u = urlsplit(url)
        if u.scheme not in ("nats", ""):
            raise NATSError(f"unsupported NATS URL scheme {u.scheme!r} in {url!r} (only nats://)")
        host = u.hostname or "127.0.0.1"
        port = u.port or 4222
        self._reader, self._writer = await asyncio.open_connection(host, port, limit=1 << 20)
        line = await self._reader.readline()
        if not line.startswith(b"INFO "):
            raise NATSError(f"nats: expected INFO from {host}:{port}, got {line[:80]!r}")
        self.server_info = json.loads(line[5:])
        if self.server_info.get("tls_required"):
            raise NATSError(f"nats: server {host}:{port} requires TLS, which this client does not support")
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "name": name, "lang": "python-chatbuf", "version": "0.1.0"}
        if u.username and u.password is not None:
            opts["user"] = unquote(u.username)
            opts["pass"] = unquote(u.password)
        elif u.username:
            opts["auth_token"] = unquote(u.username)
        self._writer.write(b"CONNECT " + json.dumps(opts).encode() + _CRLF + b"PING" + _CRLF)
        await self._writer.drain()
        # The server answers PONG once CONNECT is accepted, -ERR otherwise.
        while True:
            line = await self._reader.readline()
            if not line:
                raise ConnectionClosed(f"nats: {host}:{port} closed the connection during CONNECT")
            if line.startswith(b"PONG"):
                break
            if line.startswith(b"-ERR"):
                raise NATSError(f"nats: {host}:{port} refused CONNECT: {line[5:].strip().decode()}")
            if line.startswith(b"PING"):
                self._writer.write(b"PONG" + _CRLF)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        self._resp_prefix = "_INBOX." + secrets.token_hex(8) + "."
        self._resp_sid = self._subscribe_raw(self._resp_prefix + "*", None)

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    def _fail(self, err: BaseException) -> None:
        if self._closed.is_set():
            return
        self._error = err
        self._closed.set()
        for fut in self._pongs:
            if not fut.done():
                fut.set_exception(ConnectionClosed(str(err)))
        self._pongs.clear()
        for fut in self._resp_futures.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(str(err)))
        self._resp_futures.clear()
        for q in self._subs.values():
            if q is not None:
                q.put_nowait(None)  # wakes readers; they see the connection closed
        if self._writer is not None:
            self._writer.close()

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionClosed("nats: the server closed the connection")
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    await self._on_msg(line)
                elif line.startswith(b"PING"):
                    self._write(b"PONG" + _CRLF)
                elif line.startswith(b"PONG"):
                    if self._pongs:
                        fut = self._pongs.pop(0)
                        if not fut.done():
                            fut.set_result(None)
                elif line.startswith(b"-ERR"):
                    text = line[5:].strip().decode("utf-8", "replace")
                    # Permission errors leave the connection open; anything else closes it.
                    if "permissions violation" not in text.lower():
                        raise NATSError(f"nats: server error: {text}")
                elif line.startswith(b"INFO "):
                    self.server_info = json.loads(line[5:])
                # +OK is not sent (verbose off); other lines are ignored.
        except asyncio.CancelledError:
            self._fail(ConnectionClosed("nats: connection closed"))
            raise
        except (OSError, asyncio.IncompleteReadError, ValueError, NATSError) as err:
            self._fail(err if isinstance(err, NATSError) else ConnectionClosed(f"nats: {err}"))

    async def _on_msg(self, line: bytes) -> None:
        assert self._reader is not None
        parts = line.decode().split()
        headers: Dict[str, str] = {}
        status: Optional[int] = None
        description = ""
        if parts[0] == "HMSG":
            # HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>
            subject, sid = parts[1], int(parts[2])
            reply = parts[3] if len(parts) == 6 else ""
            hlen, total = int(parts[-2]), int(parts[-1])
            blob = await self._reader.readexactly(total + 2)
            status, description, headers = _parse_headers(blob[:hlen])
            data = blob[hlen:total]
        else:
            # MSG <subject> <sid> [reply] <#bytes>
            subject, sid = parts[1], int(parts[2])
            reply = parts[3] if len(parts) == 5 else ""
            size = int(parts[-1])
            data = (await self._reader.readexactly(size + 2))[:size]
        msg = Msg(subject, reply, data, headers, status, description)
        if sid == self._resp_sid:
            fut = self._resp_futures.pop(subject[len(self._resp_prefix):], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        q = self._subs.get(sid)
        if q is not None:
            q.put_nowait(msg)

    def _write(self, data: bytes) -> None:
        if self._closed.is_set() or self._writer is None:
            raise ConnectionClosed(f"nats: connection closed ({self._error})")
        self._writer.write(data)

    def _subscribe_raw(self, subject: str, queue: Optional[asyncio.Queue]) -> int:
        sid = self._next_sid
        self._next_sid += 1
        self._subs[sid] = queue  # type: ignore[assignment]
        self._write(f"SUB {subject} {sid}".encode() + _CRLF)
        return sid

    def subscribe(self, subject: str) -> tuple[int, asyncio.Queue]:
        """Subscribes; messages arrive on the queue (None once the connection closed)."""
        q: asyncio.Queue = asyncio.Queue()
        return self._subscribe_raw(subject, q), q

    def unsubscribe(self, sid: int) -> None:
        self._subs.pop(sid, None)
        if not self._closed.is_set():
            self._write(f"UNSUB {sid}".encode() + _CRLF)

    def new_inbox(self) -> str:
        return "_INBOX." + secrets.token_hex(12)

    def publish(self, subject: str, data: bytes = b"", reply: str = "",
                headers: Optional[Dict[str, str]] = None) -> None:
        """Queues a message for the server; flush() waits until it was read."""
        head = f" {reply}" if reply else ""
        if headers:
            hdr = _encode_headers(headers)
            self._write(f"HPUB {subject}{head} {len(hdr)} {len(hdr) + len(data)}".encode()
                        + _CRLF + hdr + data + _CRLF)
        else:
            self._write(f"PUB {subject}{head} {len(data)}".encode() + _CRLF + data + _CRLF)

    async def flush(self, timeout: float = 5.0) -> None:
        """Round trip to the server: everything published before has been processed."""
        fut = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self._write(b"PING" + _CRLF)
        assert self._writer is not None
        await self._writer.drain()
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout("nats: no PONG in time") from None

    async def request(self, subject: str, data: bytes = b"", timeout: float = 5.0,
                      headers: Optional[Dict[str, str]] = None) -> Msg:
        token = secrets.token_hex(8)
        fut = asyncio.get_running_loop().create_future()
        self._resp_futures[token] = fut
        try:
            self.publish(subject, data, reply=self._resp_prefix + token, headers=headers)
            assert self._writer is not None
            await self._writer.drain()
            msg = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"nats: no reply to {subject} within {timeout}s") from None
        finally:
            self._resp_futures.pop(token, None)
        if msg.status == 503:
            raise NATSError(f"nats: no responders on {subject}")
        return msg

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail(ConnectionClosed("nats: connection closed"))
        if self._writer is not None:
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass


async def js_api(conn: Connection, subject: str, body: Optional[dict], timeout: float = 5.0) -> dict:
    """Calls the JetStream API; returns the response, raising JSAPIError for an error."""
    payload = b"" if body is None else json.dumps(body).encode()
    msg = await conn.request(subject, payload, timeout)
    resp = json.loads(msg.data or b"{}")
    err = resp.get("error")
    if err:
        raise JSAPIError(err.get("code", 0), err.get("err_code", 0), err.get("description", ""))
    return resp


class JSAPIError(NATSError):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"jetstream: {description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


async def js_publish(conn: Connection, subject: str, data: bytes,
                     headers: Optional[Dict[str, str]] = None, timeout: float = 5.0) -> dict:
    """Publishes to a stream and waits for its PubAck."""
    msg = await conn.request(subject, data, timeout, headers=headers)
    resp = json.loads(msg.data or b"{}")
    if resp.get("error"):
        err = resp["error"]
        raise JSAPIError(err.get("code", 0), err.get("err_code", 0), err.get("description", ""))
    return resp
