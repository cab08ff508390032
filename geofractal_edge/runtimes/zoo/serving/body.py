"""A request body, read and parsed within limits: size while reading, nesting before parsing, numbers while parsing.

`read` stops at `max_bytes` (Content-Length was checked before anything was read; this catches a
chunked body). `split` separates the JSON header of the binary tensor extension from the tensor
bytes behind it (`Inference-Header-Content-Length`). `parse` refuses nesting deeper than
`max_depth` by counting brackets outside strings (in C: a regex, `bytes.translate`, a numpy
cumulative sum) before `json.loads` builds anything, integers longer than `max_int_digits`, and
NaN/Infinity literals. `skeleton` parses a large body with every float replaced by 0, so its
tensor shapes can be checked against the manifest before millions of floats are made (integers
are kept: shapes are integers).
"""

from __future__ import annotations

import json
import re

import numpy as np
from starlette.requests import ClientDisconnect

from geofractal_edge.runtimes.zoo.serving.replies import HTTPError

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_CHUNK = 1 << 20


async def read(stream, *, max_bytes: int) -> bytes:
    """The whole body of an ASGI request stream, refused with 413 past `max_bytes`."""
    parts, size = [], 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            parts.append(chunk)
    except ClientDisconnect:  # nobody is left to answer; the reply is dropped
        raise HTTPError(400, "the client went away before its body arrived", "send the whole body") from None
    return b"".join(parts)


def _too_large(max_bytes: int) -> HTTPError:
    return HTTPError(413, f"the body is over {max_bytes:,} bytes", "send fewer rows per request (or start the server with a larger --max-body)",
                     headers={"connection": "close"})


def split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor bytes) per `Inference-Header-Content-Length`; all JSON without it."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise HTTPError(400, f"Inference-Header-Content-Length {header_length[:20]!r} is not a length within the body of {len(body)} bytes",
                        "give the byte length of the JSON header that starts the body (a body with no JSON header is not supported)")
    n = int(header_length)
    return body[:n], memoryview(body)[n:]


def depth(raw: bytes) -> int:
    """The deepest nesting of [ and { outside strings, counted without parsing."""
    stripped = _STRING.sub(b"", raw) if b'"' in raw else raw
    brackets = stripped.translate(None, _NOT_BRACKETS)
    deepest, level = 0, 0
    for start in range(0, len(brackets), _CHUNK):  # bounded memory whatever the body holds
        codes = np.frombuffer(brackets, np.uint8, count=min(_CHUNK, len(brackets) - start), offset=start)
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
        running = np.cumsum(steps) + level
        deepest, level = max(deepest, int(running.max())), int(running[-1])
    return deepest


def parse(raw: bytes, *, max_depth: int, max_int_digits: int, skeleton: bool = False):
    """JSON -> Python objects; 400 naming the limit for deep nesting, long integers, NaN or bad JSON."""
    if not raw.strip():
        return {}
    if depth(raw) > max_depth:
        raise HTTPError(400, f"the JSON body is nested deeper than {max_depth} levels", "send tensors as flat lists with their shape")

    def integer(text: str):
        if len(text.lstrip("-")) > max_int_digits:
            raise ValueError(f"an integer of {len(text)} digits (at most {max_int_digits})")
        return int(text)  # kept in a skeleton too: shapes are integers

    def constant(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        if skeleton:
            return json.loads(raw, parse_int=integer, parse_float=_zero, parse_constant=constant)
        return json.loads(raw, parse_int=integer, parse_constant=constant)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, limits above
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:120]
        raise HTTPError(400, f"the body is not acceptable JSON ({reason})", 'send a JSON object, e.g. {"inputs": [...]}') from None


def _zero(_text: str) -> int:
    return 0
