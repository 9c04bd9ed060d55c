"""herd: the Python client of herd's broker (herdd).

    import herd
    with herd.connect() as c:
        print(c.generate("Hello", max_tokens=16).text)

herd.aio has the asyncio variant. The wire protocol is docs/protocol.md."""
from .client import Client, Stream, connect
from .protocol import (HerdError, Model, ProtocolError, Result, Token, code_name,
                       default_socket)

__all__ = ["Client", "Stream", "connect", "HerdError", "ProtocolError", "Model", "Result",
           "Token", "code_name", "default_socket"]
__version__ = "0.1.0"
