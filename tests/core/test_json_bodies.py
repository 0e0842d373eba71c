"""REST bodies through orjson: the same JSON text out, the same values in, the same limits."""

from __future__ import annotations

import json

import pytest

from server.core.api import decode_json, dump_json
from server.core.errors import MalformedJSON, PayloadTooLarge
from server.core.jsonlimits import JsonTooDeep


def test_output_is_compact_utf8_in_key_order() -> None:
    data = {"z": "原发性高血压", "a": [1, 2.5, None, True], "m": {"b": 1, "a": 2}}
    assert dump_json(data) == json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    assert dump_json({"n": 2**70}) == b'{"n":1180591620717411303424}'  # past orjson's 64 bits


def test_input_keeps_huge_integers_exact_and_refuses_what_json_refused() -> None:
    limits = {"max_bytes": 10_000, "max_depth": 8}
    assert decode_json(b'{"slot_id": 1180591620717411303424}', **limits) == {"slot_id": 2**70}
    assert decode_json('{"name": "李明"}'.encode(), **limits) == {"name": "李明"}
    with pytest.raises(MalformedJSON):
        decode_json(b'{"a": ', **limits)
    with pytest.raises(JsonTooDeep):
        decode_json(b"[" * 50 + b"]" * 50, **limits)
    with pytest.raises(PayloadTooLarge):
        decode_json(b'"' + b"x" * 20_000 + b'"', **limits)
