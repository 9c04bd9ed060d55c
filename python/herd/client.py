"""The blocking client: one connection to herdd, requests multiplexed on it.

Several requests may be in flight on one Client (streams read side by side):
frames that arrive for another request wait in that request's queue. A
Client is not thread-safe: use one per thread, or herd.aio."""
import collections
import socket
from typing import Any, Deque, Dict, Iterator, List, Optional

from . import protocol as P
from .protocol import HerdError, ProtocolError, Result, Token

_ADMIN = "admin"  # the queue of admin replies (they carry no id)


class Client(P.Session):
    def __init__(self, path: Optional[str] = None, name: Optional[str] = None, priority: int = 0,
                 timeout: Optional[float] = 10.0, max_frame: int = P.DEFAULT_MAX_FRAME,
                 unicode_errors: str = "replace"):
        self.path = path or P.default_socket()
        self.max_frame, self.unicode_errors = max_frame, unicode_errors
        self._queues: Dict[Any, Deque[Dict[str, Any]]] = {}
        self._sock: Optional[socket.socket] = None
        P.check_socket(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(timeout)
            s.connect(self.path)
            self._sock = s
            self._send(P.hello(name, priority))
            self._welcome(self._read())
            s.settimeout(None)
        except BaseException:
            self.close()
            raise

    # ---- plumbing -------------------------------------------------------------

    def _send(self, frame: Dict[str, Any]) -> None:
        if self._sock is None:
            raise HerdError(-107, "not connected")  # -ENOTCONN
        data = P.encode(frame, getattr(self, "broker_max_frame", 0))
        self._sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                self.close()
                raise HerdError(-104, "the broker closed the connection")  # -ECONNRESET
            buf += chunk
        return bytes(buf)

    def _read(self) -> Dict[str, Any]:
        if self._sock is None:
            raise HerdError(-107, "not connected")
        try:
            n = P.frame_len(self._recv_exact(P.HDR.size), self.max_frame)
            return P.decode(self._recv_exact(n), self.unicode_errors)
        except ProtocolError:
            self.close()
            raise

    def _wait(self, key: Any) -> Dict[str, Any]:
        """The next frame for key (a request id, or _ADMIN)."""
        q = self._queues[key]
        while not q:
            f = self._read()
            fid = f.get("id")
            if f["t"] == "admin_ok" or (f["t"] == "err" and fid is None and _ADMIN in self._queues):
                fid = _ADMIN
            if fid in self._queues:
                self._queues[fid].append(f)
            elif f["t"] == "err" and fid is None:
                if P.is_fatal(f):
                    self.close()
                raise P.error_of(f)
            # else: a frame of a request already given up (cancelled stream dropped)
        return q.popleft()

    def _start(self, model: Optional[str], stream: bool, **kw) -> int:
        rid, frame = self._gen(model, stream, kw)
        self._queues[rid] = collections.deque()
        try:
            self._send(frame)
        except BaseException:
            del self._queues[rid]
            raise
        return rid

    # ---- the API ----------------------------------------------------------------

    def generate(self, prompt: Optional[str] = None, model: Optional[str] = None, **kw) -> Result:
        """One request, waited for: prompt (or tokens=[...], messages=[...]),
        max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
        stop, priority, deadline_ms, cache. Raises HerdError for an err."""
        rid = self._start(model, False, prompt=prompt, **kw)
        try:
            f = self._wait(rid)
            while f["t"] == "tok":  # not sent without stream; tolerated
                f = self._wait(rid)
        finally:
            self._queues.pop(rid, None)
        if f["t"] == "err":
            raise P.error_of(f)
        return P.result_of(f, [], [])

    def stream(self, prompt: Optional[str] = None, model: Optional[str] = None, **kw) -> "Stream":
        """A streamed request: iterate it for Token pieces; .result after the end."""
        return Stream(self, self._start(model, True, prompt=prompt, **kw))

    def chat(self, messages: List[Dict[str, str]], model: Optional[str] = None,
             stream: bool = False, **kw):
        """messages through the model's chat template: a Result, or a Stream."""
        if stream:
            return Stream(self, self._start(model, True, messages=messages, **kw))
        return self.generate(None, model, messages=messages, **kw)

    def cancel(self, request_id: int) -> None:
        """Asks the broker to end the request (it ends with reason "cancel")."""
        self._send({"t": "cancel", "id": P._int("request_id", request_id, 0, P.U64)})

    def admin(self, cmd: str, *args: str) -> Any:
        """An admin command (herdctl's: status, models, batch, ...); needs the
        broker's uid or its admin group, else HerdError -EPERM."""
        self._queues[_ADMIN] = collections.deque()
        try:
            self._send({"t": "admin", "cmd": cmd, "args": list(args)})
            f = self._wait(_ADMIN)
        finally:
            self._queues.pop(_ADMIN, None)
        if f["t"] == "err":
            raise P.error_of(f)
        return f["result"]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stream(P.StreamState):
    """The pieces of a streamed request, in order; they add up to its text."""

    def __init__(self, client: Client, request_id: int):
        super().__init__()
        self.client, self.id = client, request_id

    def __iter__(self) -> Iterator[Token]:
        return self

    def __next__(self) -> Token:
        if self.result is not None:
            raise StopIteration
        try:
            f = self.client._wait(self.id)
        except BaseException as e:
            f = e
        piece = self.take(f, self.client._queues)
        if piece is None:
            raise StopIteration
        return piece

    def cancel(self) -> None:
        """Ends the request; iterating on gives what is left and the end."""
        if self.result is None:
            self.client.cancel(self.id)

    def close(self) -> None:
        """Gives the request up: cancels it if it runs and drops what it
        would still send (a stream left unread otherwise keeps its frames)."""
        if self.result is None:
            self.client._queues.pop(self.id, None)
            if self.client._sock is not None:
                self.client.cancel(self.id)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def text(self) -> str:
        """Reads the stream to its end; the whole text."""
        for _ in self:
            pass
        return self.result.text


def connect(path: Optional[str] = None, **kw) -> Client:
    """A Client on the broker's socket (default: as libherd finds it)."""
    return Client(path, **kw)
