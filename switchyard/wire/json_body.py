"""JSON request bodies, decoded within bounds on their shape.

A body is refused before it is parsed when it holds more objects and arrays than any real
request needs (parsing a million of them would hold a worker's event loop for half a second),
and after it when it nests deeper than an upstream request can be re-encoded (orjson stops
at 255 levels), naming the place where it goes too deep.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from switchyard.wire.errors import invalid_request


# orjson encodes at most this many levels of nesting (the outermost container is level 1).
ENCODABLE_DEPTH = 254
_SLICE = 4 << 20


def containers_in(raw: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """Objects and arrays a body can hold at most: its `{` and `[` bytes (those inside strings
    only add to the count, so a body under a cap surely is). A C scan, about 1 ms per MB."""
    return raw.count(b"{", start, end) + raw.count(b"[", start, end)


async def acontainers_in(raw: bytes | bytearray) -> int:
    """`containers_in`, a slice at a time, letting the event loop run between slices."""
    total = 0
    for start in range(0, len(raw), _SLICE):
        total += containers_in(raw, start, start + _SLICE)
        await asyncio.sleep(0)
    return total


def parse_json(raw: bytes | bytearray, max_nodes: int = 100_000, max_depth: int = 200, containers: int | None = None) -> Any:
    """Decode a JSON body within these shape bounds; every refusal is a 400 in OpenAI's shape.
    `containers`: `containers_in(raw)` if the caller counted already."""
    if containers is None:
        containers = containers_in(raw)
    if containers > max_nodes:
        raise invalid_request(
            f"The request body holds more than {max_nodes:,} JSON objects and arrays; "
            "split it into smaller requests.", code="request_too_complex")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos}). "
            "The OpenAI API expects a JSON payload."
        ) from None
    # Fewer containers cannot nest that deep. Otherwise one C encode tells (wrapped so that it
    # fails exactly past `max_depth`); only then is the body walked to name the place.
    if containers > max_depth and not _encodes_within(value, max_depth):
        path = too_deep(value, max_depth)
        raise invalid_request(
            f"Invalid value for '{path or 'body'}': JSON nested more than {max_depth} levels deep.",
            param=path or None, code="invalid_value")
    return value


def _encodes_within(value: Any, max_depth: int) -> bool:
    wrapped = value
    for _ in range(ENCODABLE_DEPTH - max_depth):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return False
    return True


def too_deep(value: Any, max_depth: int) -> str | None:
    """The path (`messages[0].content`) of the first container nested past `max_depth`, else None."""
    # Each entry: (container, depth, index of its parent entry, its key there). Paths are built
    # only for the one container that is too deep.
    seen: list[tuple[Any, int, int, Any]] = [(value, 1, -1, None)]
    stack = [0]
    while stack:
        at = stack.pop()
        node, depth = seen[at][0], seen[at][1]
        if depth > max_depth:
            return _path(seen, at)
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(child, (dict, list)):
                seen.append((child, depth + 1, at, key))
                stack.append(len(seen) - 1)
    return None


def _path(seen: list[tuple[Any, int, int, Any]], at: int) -> str:
    parts: list[str] = []
    while seen[at][2] >= 0:
        key = seen[at][3]
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
        at = seen[at][2]
    return "".join(reversed(parts)).lstrip(".")
