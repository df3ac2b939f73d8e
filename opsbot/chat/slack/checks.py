"""What an HTTP delivery must pass before Bolt acts on it: Slack's v0 signature, and Slack's shapes.

Why here and not in Bolt: Bolt parses before it verifies and reads fields assuming Slack's
documented shapes, so odd input would be a 500 with a traceback instead of a refusal.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SHAPE_ERRORS", "SIGNATURE_WINDOW_SECONDS", "slack_shaped", "verify_slack_signature"]

#: What Bolt raises on a body of a shape Slack never sends (JSON that is not JSON, a list, a number).
SHAPE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError)

#: Fields that are objects wherever Slack sends them (events, interactions); Bolt's middleware calls
#: `.get` on them before any listener runs, and answers 500 with a traceback when they are not.
_OBJECT_FIELDS = ("event", "team", "user", "channel", "container", "enterprise", "view", "message", "state")
#: ... of which Slack sends these as `null` (a workspace outside an Enterprise Grid org, org-wide apps)
_NULLABLE = frozenset({"enterprise", "team"})


def slack_shaped(body: object) -> bool:
    """The body is an object whose object fields are objects and whose `actions` are objects."""
    if not isinstance(body, dict):  # `payload=[1]`, `payload=null`, a JSON list
        return False
    for key in _OBJECT_FIELDS:
        if key in body and not isinstance(body[key], dict) and not (body[key] is None and key in _NULLABLE):
            return False
    actions = body.get("actions")
    return actions is None or (isinstance(actions, list) and all(isinstance(a, dict) for a in actions))


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
