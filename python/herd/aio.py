"""The asyncio client: the same API as herd.Client, with coroutines.

One reader task dispatches the broker's frames to the requests waiting for
them, so any number of generate() and stream() calls run concurrently on
one connection:

    async with herd.aio.connect() as c:
        results = await asyncio.gather(*(c.generate(p) for p in prompts))
        async for piece in c.stream("Hello"):
            print(piece.text, end="")
"""
import asyncio
from typing import Any, Dict, List, Optional

from . import protocol as P
from .protocol import HerdError, Result, Token

_ADMIN = "admin"


class AsyncClient(P.Session):
    def __init__(self):
        self._queues: Dict[Any, asyncio.Queue] = {}
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._task: Optional[asyncio.Task] = None
        self._failure: Optional[BaseException] = None
        self._admin_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Optional[str] = None, name: Optional[str] = None,
                   priority: int = 0, timeout: Optional[float] = 10.0,
                   max_frame: int = P.DEFAULT_MAX_FRAME,
                   unicode_errors: str = "replace") -> "AsyncClient":
        c = cls()
        c.path, c.max_frame, c.broker_max_frame = path or P.default_socket(), max_frame, 0
        c.unicode_errors = unicode_errors
        P.check_socket(c.path)
        try:
            await asyncio.wait_for(c._handshake(name, priority), timeout)
        except BaseException:
            await c.close()
            raise
        c._task = asyncio.ensure_future(c._pump())
        return c

    async def _handshake(self, name, priority):
        self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        await self._send(P.hello(name, priority))
        self._welcome(await self._read())

    async def _send(self, frame: Dict[str, Any]) -> None:
        if self._writer is None or self._failure is not None:
            raise self._failure or HerdError(-107, "not connected")
        self._writer.write(P.encode(frame, self.broker_max_frame))
        await self._writer.drain()

    async def _read(self) -> Dict[str, Any]:
        try:
            hdr = await self._reader.readexactly(P.HDR.size)
            body = await self._reader.readexactly(P.frame_len(hdr, self.max_frame))
            return P.decode(body, self.unicode_errors)
        except asyncio.IncompleteReadError:
            raise HerdError(-104, "the broker closed the connection") from None

    async def _pump(self) -> None:
        """Frames to their requests' queues until the connection ends."""
        try:
            while True:
                f = await self._read()
                fid = f.get("id")
                if f["t"] == "admin_ok" or (f["t"] == "err" and fid is None and _ADMIN in self._queues):
                    fid = _ADMIN
                if fid in self._queues:
                    self._queues[fid].put_nowait(f)
                elif f["t"] == "err" and fid is None:
                    raise P.error_of(f)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._failure = e
            for q in self._queues.values():
                q.put_nowait(e)
            if self._writer is not None:
                self._writer.close()

    async def _wait(self, key: Any) -> Dict[str, Any]:
        f = await self._queues[key].get()
        if isinstance(f, BaseException):
            raise f
        return f

    async def _start(self, model: Optional[str], stream: bool, **kw) -> int:
        rid, frame = self._gen(model, stream, kw)
        self._queues[rid] = asyncio.Queue()
        try:
            await self._send(frame)
        except BaseException:
            del self._queues[rid]
            raise
        return rid

    async def generate(self, prompt: Optional[str] = None, model: Optional[str] = None,
                       **kw) -> Result:
        rid = await self._start(model, False, prompt=prompt, **kw)
        try:
            f = await self._wait(rid)
            while f["t"] == "tok":
                f = await self._wait(rid)
        finally:
            self._queues.pop(rid, None)
        if f["t"] == "err":
            raise P.error_of(f)
        return P.result_of(f, [], [])

    def stream(self, prompt: Optional[str] = None, model: Optional[str] = None,
               **kw) -> "AsyncStream":
        """An async iterator of Token pieces; the request is sent on the first step."""
        return AsyncStream(self, model, dict(kw, prompt=prompt))

    async def chat(self, messages: List[Dict[str, str]], model: Optional[str] = None, **kw):
        return await self.generate(None, model, messages=messages, **kw)

    def chat_stream(self, messages: List[Dict[str, str]], model: Optional[str] = None,
                    **kw) -> "AsyncStream":
        return AsyncStream(self, model, dict(kw, messages=messages))

    async def cancel(self, request_id: int) -> None:
        await self._send({"t": "cancel", "id": P._int("request_id", request_id, 0, P.U64)})

    async def admin(self, cmd: str, *args: str) -> Any:
        async with self._admin_lock:  # replies carry no id: one at a time
            self._queues[_ADMIN] = asyncio.Queue()
            try:
                await self._send({"t": "admin", "cmd": cmd, "args": list(args)})
                f = await self._wait(_ADMIN)
            finally:
                self._queues.pop(_ADMIN, None)
        if f["t"] == "err":
            raise P.error_of(f)
        return f["result"]

    async def close(self) -> None:
        """Closes the connection; requests still waiting raise HerdError."""
        for q in self._queues.values():
            q.put_nowait(HerdError(-107, "the client was closed"))  # -ENOTCONN
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
            self._task = None
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class AsyncStream(P.StreamState):
    def __init__(self, client: AsyncClient, model: Optional[str], kw: Dict[str, Any]):
        super().__init__()
        self.client, self._model, self._kw = client, model, kw
        self.id: Optional[int] = None

    def __aiter__(self) -> "AsyncStream":
        return self

    async def start(self) -> int:
        if self.id is None:
            self.id = await self.client._start(self._model, True, **self._kw)
        return self.id

    async def __anext__(self) -> Token:
        if self.result is not None:
            raise StopAsyncIteration
        await self.start()
        try:
            f = await self.client._wait(self.id)
        except BaseException as e:
            f = e
        piece = self.take(f, self.client._queues)
        if piece is None:
            raise StopAsyncIteration
        return piece

    async def cancel(self) -> None:
        if self.id is not None and self.result is None:
            await self.client.cancel(self.id)

    async def close(self) -> None:
        """Gives the request up: cancels it if it runs and drops what it would still send."""
        if self.id is not None and self.result is None:
            self.client._queues.pop(self.id, None)
            if self.client._failure is None and self.client._writer is not None:
                await self.client.cancel(self.id)

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def text(self) -> str:
        async for _ in self:
            pass
        return self.result.text


class _Connect:
    """await connect(...) gives the client; async with connect(...) closes it after."""

    def __init__(self, kw):
        self._kw, self._c = kw, None

    def __await__(self):
        return AsyncClient.open(**self._kw).__await__()

    async def __aenter__(self) -> AsyncClient:
        self._c = await AsyncClient.open(**self._kw)
        return self._c

    async def __aexit__(self, *exc) -> None:
        await self._c.close()


def connect(path: Optional[str] = None, **kw) -> _Connect:
    return _Connect(dict(kw, path=path))
