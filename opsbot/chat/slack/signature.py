"""Slack's v0 request signature, checked before Bolt sees a byte of an HTTP delivery."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_WINDOW_SECONDS", "verify_slack_signature"]

#: Slack's replay window for `X-Slack-Request-Timestamp` (its docs say five minutes).
SIGNATURE_WINDOW_SECONDS = 300


def verify_slack_signature(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, *, now: float
) -> bool:
    """Slack's v0 request signature over the raw body bytes, within the replay window.

    Why our own check before Bolt's: slack_sdk's verifier calls `int()` on the timestamp and compares
    `str`s, so `abc`, `1.7e9`, 5,000 digits or a non-ASCII byte in either header raise (an HTTP 500
    with a traceback) instead of being refused; and Bolt parses the body before it verifies. Here
    the timestamp must be plain ASCII digits of sane length, the comparison is over bytes, and
    nothing is parsed until this says yes. Bolt still verifies again behind it.
    """
    if not secret or not timestamp or not signature:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = b"v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest().encode("ascii")
    # surrogatepass: aiohttp hands non-UTF-8 header bytes over as lone surrogates
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "surrogatepass"))
