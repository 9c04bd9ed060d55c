"""herd's wire protocol (docs/protocol.md), shared by the blocking and the
asyncio client: framing, the checks every received frame passes, the `gen`
frame built from keyword arguments, errors and result types.

A frame is a 4-byte little-endian length N and N bytes holding one msgpack
map with a string key "t". Frames from the broker are refused (ProtocolError,
the connection is closed) when longer than max_frame, not exactly one map,
nested deeper than 16 levels, with a non-string or repeated key, of an
unknown type, or missing a required key or with one of the wrong type."""
import errno
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import msgpack

VERSION = 1
HDR = struct.Struct("<I")
DEFAULT_MAX_FRAME = 16 << 20  # largest frame accepted from the broker (as libherd)
SYSTEM_SOCKET = "/run/herd/herd.sock"
MAX_DEPTH = 16
U32, U64, I31 = (1 << 32) - 1, (1 << 64) - 1, (1 << 31) - 1

# include/herd/error.h
HERD_E_FORMAT = -10001
HERD_E_TRUNCATED = -10002
HERD_E_RANGE = -10003
HERD_E_UNSUPPORTED = -10004
HERD_E_MISSING = -10005
HERD_E_SHAPE = -10006
HERD_E_INVAL = -10007
HERD_E_NOSPACE = -10008
HERD_E_PROTO = -10009
HERD_E_VERSION = -10010
HERD_E_CANCELLED = -10011
HERD_E_LIMIT = -10012
HERD_E_UNTRUSTED = -10013
CODES = {v: k for k, v in list(globals().items()) if k.startswith("HERD_E_")}
REASONS = ("stop", "length", "cancel", "deadline")


def code_name(code: int) -> str:
    if code in CODES:
        return CODES[code]
    if code < 0 and -code in errno.errorcode:
        return "-" + errno.errorcode[-code]
    return str(code)


class HerdError(Exception):
    """An `err` frame of the broker (or a local failure named the same way)."""

    def __init__(self, code: int, msg: str, request_id: Optional[int] = None):
        self.code, self.msg, self.request_id = code, msg, request_id
        self.name = code_name(code)
        super().__init__(f"{self.name}: {msg}")


class ProtocolError(HerdError):
    """A frame that breaks the protocol; the connection is closed."""

    def __init__(self, msg: str):
        super().__init__(HERD_E_PROTO, msg)


@dataclass
class Model:
    name: str
    digest: str = ""
    segment: str = ""
    n_vocab: int = 0
    n_ctx: int = 0
    image_bytes: int = 0


@dataclass
class Token:
    text: str  # the text that may be shown now (may be empty)
    token: int  # the token id, -1 for the last piece of held-back text


@dataclass
class Result:
    id: int
    text: str
    reason: str  # "stop", "length", "cancel" or "deadline"
    n_prompt: int
    n_gen: int
    n_cached: int = 0
    t_queue_ms: float = 0.0
    t_first_ms: float = 0.0
    t_total_ms: float = 0.0
    merged: bool = False
    cached: bool = False
    tokens: List[int] = field(default_factory=list)  # streamed token ids


def default_socket() -> str:
    """As libherd: $HERD_SOCKET, else $XDG_RUNTIME_DIR/herd/herd.sock when it
    exists, else /run/herd/herd.sock when it exists, else the first that applies."""
    env = os.environ.get("HERD_SOCKET")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    user = os.path.join(xdg, "herd", "herd.sock") if xdg else ""
    if user and os.path.exists(user):
        return user
    if os.path.exists(SYSTEM_SOCKET) or not user:
        return SYSTEM_SOCKET
    return user


# ---- encoding ----------------------------------------------------------------

def encode(frame: Dict[str, Any], limit: int = 0) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    if limit and len(body) > limit:
        raise HerdError(HERD_E_LIMIT,
                        f"a {frame['t']} frame of {len(body)} bytes is over the broker's "
                        f"frame limit ({limit} bytes)")
    return HDR.pack(len(body)) + body


def hello(name: Optional[str], priority: int) -> Dict[str, Any]:
    _int("priority", priority, -(1 << 31), I31)
    return {"t": "hello", "v": VERSION, "name": name or f"py-{os.getpid()}", "prio": priority}


def _int(what, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _num(what, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise ValueError(f"{what} must be a number, got {v!r}")
    return float(v)


def gen_frame(req_id: int, model: str, *, prompt=None, tokens=None, messages=None,
              max_tokens=128, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
              repeat_penalty=1.0, seed=0, stop: Sequence[str] = (), priority=None,
              deadline_ms=0, cache=True, stream=False) -> Dict[str, Any]:
    """The `gen` frame of one request; ValueError names a bad argument."""
    given = [k for k, v in (("prompt", prompt), ("tokens", tokens), ("messages", messages))
             if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of prompt, tokens, messages")
    f: Dict[str, Any] = {"t": "gen", "id": req_id, "model": model}
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a str")
        f["prompt"] = prompt
    elif tokens is not None:
        f["tokens"] = [_int("a token id", t, 0, I31) for t in tokens]
    else:
        msgs = list(messages)
        if not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                               and isinstance(m.get("content"), str) for m in msgs):
            raise ValueError("messages must be a non-empty list of {role: str, content: str}")
        f["messages"] = [{"role": m["role"], "content": m["content"]} for m in msgs]
    if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
        raise ValueError("stop must be a list of str")
    f.update(max_tokens=_int("max_tokens", max_tokens, 0, I31),
             temp=_num("temperature", temperature), top_k=_int("top_k", top_k, -(1 << 31), I31),
             top_p=_num("top_p", top_p), min_p=_num("min_p", min_p),
             rep_pen=_num("repeat_penalty", repeat_penalty), seed=_int("seed", seed, 0, U64),
             stop=list(stop), deadline_ms=_int("deadline_ms", deadline_ms, 0, U64),
             stream=bool(stream), cache=bool(cache))
    if priority is not None:
        f["prio"] = _int("priority", priority, -(1 << 31), I31)
    return f


# ---- decoding ----------------------------------------------------------------

def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ProtocolError(f"a map key is not a string: {k!r}")
        if k in d:
            raise ProtocolError(f"key '{k}' given twice")
        d[k] = v
    return d


def _depth(v, d=1):
    if d > MAX_DEPTH:
        raise ProtocolError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, dict):
        for x in v.values():
            _depth(x, d + 1)
    elif isinstance(v, list):
        for x in v:
            _depth(x, d + 1)


def frame_len(header: bytes, max_frame: int) -> int:
    (n,) = HDR.unpack(header)
    if n > max_frame:
        raise ProtocolError(f"the broker sent a frame of {n} bytes, over the limit of "
                            f"{max_frame} bytes (max_frame)")
    return n


def _is_int(v, lo=0, hi=U64):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt(pred):
    return lambda v: v is None or pred(v)


def _models(v):
    return isinstance(v, list) and len(v) <= 4096 and all(
        isinstance(m, dict) and isinstance(m.get("name"), str)
        and all(_opt(lambda s: isinstance(s, str))(m.get(k)) for k in ("digest", "segment"))
        and all(_opt(_is_int)(m.get(k)) for k in ("n_vocab", "n_ctx", "image_bytes"))
        for m in v)


_STR = lambda v: isinstance(v, str)  # noqa: E731
# type -> {key: (required, check)}
SCHEMA = {
    "welcome": {"v": (1, lambda v: _is_int(v, 0, U32)), "agent": (1, _is_int),
                "models": (1, _models), "max_frame": (1, lambda v: _is_int(v, 0, U32)),
                "max_tokens": (1, lambda v: _is_int(v, 0, U32))},
    "tok": {"id": (1, _is_int), "text": (1, _STR), "tok": (1, lambda v: _is_int(v, 0, I31))},
    "done": {"id": (1, _is_int), "reason": (1, lambda v: v in REASONS), "text": (0, _STR),
             "n_prompt": (1, _is_int), "n_gen": (1, _is_int), "n_cached": (0, _is_int),
             "t_queue_ms": (0, _is_num), "t_first_ms": (0, _is_num), "t_total_ms": (0, _is_num),
             "merged": (0, lambda v: isinstance(v, bool)), "cached": (0, lambda v: isinstance(v, bool))},
    "err": {"id": (0, _is_int), "code": (1, lambda v: _is_int(v, -(1 << 31), I31)),
            "msg": (1, _STR)},
    "admin_ok": {"cmd": (1, _STR), "result": (2, lambda v: True)},
}


def decode(body: bytes, unicode_errors: str = "replace") -> Dict[str, Any]:
    """One frame's body into a checked map (unknown keys kept, nil = absent).
    Text that is not valid UTF-8 (a random-weight model's bytes) is decoded
    with unicode_errors: "replace" (U+FFFD), "surrogateescape" (the bytes
    come back with .encode("utf-8", "surrogateescape")) or "strict"."""
    try:
        f = msgpack.unpackb(body, raw=False, object_pairs_hook=_pairs, strict_map_key=False,
                            unicode_errors=unicode_errors)
    except ProtocolError:
        raise
    except Exception as e:  # ExtraData, FormatError, UnicodeDecodeError, ...
        raise ProtocolError(f"the broker sent a frame that is not one msgpack map: {e}") from None
    if not isinstance(f, dict):
        raise ProtocolError(f"the broker sent a frame that is not a map but {type(f).__name__}")
    _depth(f)
    t = f.get("t")
    schema = SCHEMA.get(t) if isinstance(t, str) else None
    if schema is None:
        raise ProtocolError(f"the broker sent a frame of unknown type {t!r}")
    for k, (req, check) in schema.items():
        v = f.get(k)
        if v is None and req != 2:
            if req:
                raise ProtocolError(f"{t} frame without its '{k}' key")
            f.pop(k, None)
        elif not check(v):
            raise ProtocolError(f"{t} frame: '{k}' is of the wrong type or out of range: {v!r}")
    return f


def welcome_models(w: Dict[str, Any]) -> List[Model]:
    keys = ("digest", "segment", "n_vocab", "n_ctx", "image_bytes")
    return [Model(m["name"], **{k: m[k] for k in keys if m.get(k) is not None})
            for m in w["models"]]


def error_of(f: Dict[str, Any]) -> HerdError:
    return HerdError(f["code"], f["msg"], f.get("id"))


def result_of(done: Dict[str, Any], texts: List[str], toks: List[int]) -> Result:
    return Result(id=done["id"], text=done.get("text", "".join(texts)), reason=done["reason"],
                  n_prompt=done["n_prompt"], n_gen=done["n_gen"], n_cached=done.get("n_cached", 0),
                  t_queue_ms=float(done.get("t_queue_ms", 0)),
                  t_first_ms=float(done.get("t_first_ms", 0)),
                  t_total_ms=float(done.get("t_total_ms", 0)), merged=done.get("merged", False),
                  cached=done.get("cached", False), tokens=toks)


class Session:
    """What both clients keep of a connection: the welcome, the request ids."""

    _next_id = 1

    def _welcome(self, w: Dict[str, Any]) -> None:
        if w["t"] == "err":
            raise error_of(w)
        if w["t"] != "welcome":
            raise ProtocolError(f"expected welcome, got {w['t']}")
        self.agent_id = w["agent"]
        self.broker_max_frame, self.max_tokens = w["max_frame"], w["max_tokens"]
        self._models = welcome_models(w)

    def models(self) -> List[Model]:
        """The models the broker offered in its welcome."""
        return list(self._models)

    def default_model(self) -> str:
        if not self._models:
            raise HerdError(HERD_E_MISSING, "the broker offers no model")
        return self._models[0].name

    def _gen(self, model: Optional[str], stream: bool, kw: Dict[str, Any]):
        """A new request id and its gen frame."""
        rid, self._next_id = self._next_id, self._next_id + 1
        return rid, gen_frame(rid, model or self.default_model(), stream=stream, **kw)


class StreamState:
    """The pieces of one streamed request so far, and its end."""

    def __init__(self):
        self.result: Optional[Result] = None
        self._texts: List[str] = []
        self._toks: List[int] = []

    def take(self, f, queues: Dict[Any, Any]) -> Optional[Token]:
        """A tok frame's piece, or None at the end (result set); raises an err
        frame or an exception f. At the end the request's queue is dropped."""
        if isinstance(f, BaseException) or f["t"] != "tok":
            queues.pop(self.id, None)
        if isinstance(f, BaseException):
            raise f
        if f["t"] == "tok":
            self._texts.append(f["text"])
            self._toks.append(f["tok"])
            return Token(f["text"], f["tok"])
        if f["t"] == "err":
            raise error_of(f)
        self.result = result_of(f, self._texts, self._toks)
        return None


def is_fatal(f: Dict[str, Any]) -> bool:
    """An err without id after which the broker closes the connection."""
    return f["t"] == "err" and f.get("id") is None and f["code"] in (HERD_E_PROTO, HERD_E_VERSION)


def check_socket(path: str) -> None:
    """A clear error before connect: no broker at path, or not a socket."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HerdError(-errno.ENOENT, f"no broker is running at {path}") from None
    except OSError:
        return  # connect() names it
    if not stat.S_ISSOCK(st.st_mode):
        raise HerdError(-errno.ENOTSOCK, f"{path} is not a socket")
