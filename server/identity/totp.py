"""TOTP second factor (RFC 6238: SHA-1, 30 s, 6 digits: what authenticator apps expect).

The codes come from pyotp; what is ours is the once-only rule: :func:`totp_step`
names the time step a code belongs to, and the login stores the last step it
accepted and refuses that step (and any earlier one) again.
"""

from __future__ import annotations

import hashlib
import time

import pyotp

STEP_SECONDS = 30
# Codes one step either side of now are accepted, for clock drift.
DRIFT_STEPS = 1


def new_totp_secret() -> str:
    """A new 160-bit secret, base32 without padding (as before: old secrets stay valid)."""
    return pyotp.random_base32(length=32)


def _totp(secret: str) -> pyotp.TOTP:
    # Secrets are stored without "=" padding; pyotp pads them when it decodes.
    return pyotp.TOTP(secret, digits=6, digest=hashlib.sha1, interval=STEP_SECONDS)


def totp_code(secret: str, at: float | None = None) -> str:
    """The code of the time step containing ``at`` (now by default)."""
    return _totp(secret).at(time.time() if at is None else at)


def totp_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step ``code`` belongs to (current or one either side), or None.

    The caller remembers the step it accepted and refuses it again: a code works once.
    """
    totp = _totp(secret)
    now = time.time() if at is None else at
    counter = totp.timecode(now)
    for candidate in range(counter - DRIFT_STEPS, counter + DRIFT_STEPS + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            return candidate
    return None


def totp_uri(secret: str, username: str) -> str:
    return _totp(secret).provisioning_uri(name=username, issuer_name="Yihao")
