"""Canonical JSON: the byte forms that hashes and signatures are computed over.

Two forms, both kept for good:

- :func:`canonical_jcs` — RFC 8785 (the JSON Canonicalization Scheme). New practitioner
  signatures are made over it, and say so (``"canon": "jcs"`` in the signature). Any
  language's verifier can rebuild these bytes: numbers in their shortest ECMAScript form
  (``20.0`` is ``20``), keys sorted by UTF-16 code units, strings escaped as
  ``JSON.stringify`` does.
- :func:`canonical_json_v1` — the form used before RFC 8785: Python's ``json.dumps`` with
  sorted keys, no white space, UTF-8 (floats keep Python's spelling, ``20.0``). Signatures
  made before RFC 8785 carry no ``canon`` and are verified over it. The audit chain
  (``entry_hash``), the audit checkpoints and idempotency request hashes keep hashing it:
  those hashes are stored and chained, so changing their form would break every chain and
  checkpoint already written. They are checked only by this server, never by an outside
  verifier.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785


def canonical_jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON (raises ``rfc8785.CanonicalizationError`` on values it cannot
    express: NaN, integers beyond ±2^53, non-string keys)."""
    return rfc8785.dumps(value)


def canonical_json_v1(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8, Python's number spelling."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()
