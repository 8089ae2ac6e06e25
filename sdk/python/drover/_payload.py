"""Payloads on the wire (docs/payloads.md): bytes, with a flag saying they are JSON text."""

from __future__ import annotations

import json
from typing import Any, Tuple, Union

#: What a payload, result, checkpoint or message body may be: any JSON value, or bytes.
Payload = Union[None, bool, int, float, str, list, dict, bytes, bytearray, memoryview]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode(value: Any) -> Tuple[bytes, bool]:
    """(bytes, is_json) for a value: bytes stay bytes, anything else is JSON text.

    ``None`` is no payload at all (empty bytes, not JSON ``null``)."""
    if value is None:
        return b"", False
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), False
    try:
        return _dumps(value).encode("utf-8"), True
    except (TypeError, ValueError) as e:
        raise TypeError(f"payload: not JSON-serialisable ({e}); pass a JSON value or bytes") from e


def decode(data: bytes, is_json: bool) -> Any:
    """The value of (data, is_json): the parsed JSON, or the bytes (None when empty)."""
    if is_json:
        return json.loads(data)
    return data if data else None
