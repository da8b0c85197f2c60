"""The ``running-total-py`` handler's logic: a running total per account, kept
in the stage's state, as the Rust ``plugins/running-total`` does it.

The account is the value's ``account`` field, a non-empty JSON string, and
the state key is its UTF-8 bytes; the message key plays no part.
``{"account": "alice", "amount": 5}`` becomes
``{"account": "alice", "amount": 5, "total": 12, "count": 3}`` when alice's
earlier amounts summed to 7 over two messages, and the state under
``b"alice"`` becomes ``{"count":3,"total":12}``. A value that is not a JSON
object, an account that is missing or not a non-empty string, an amount that
is not a 64-bit integer (``5.0``, ``"5"``, ``true`` are not), or a total that
would leave the 64-bit range is :class:`InvalidInput` and changes nothing.

The state is reached through a *store*, any object with ``get(key) -> bytes |
None`` and ``set(key, value)``: in the component it is the host's ``state``
import (see app.py), in the tests a dict. Nothing here imports the component
bindings, so it is tested natively (``python3 -m unittest`` in this folder).
"""

import json

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


class InvalidInput(Exception):
    """The message cannot be processed: dead-letter it (``invalid-input``)."""


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _i64(value):
    """``value`` if it is a JSON integer within 64 bits (serde_json's ``as_i64``)."""
    if isinstance(value, int) and not isinstance(value, bool) and I64_MIN <= value <= I64_MAX:
        return value
    return None


def totals(store, key: bytes):
    """The account's saved (total, count); (0, 0) for a new or unreadable entry."""
    saved = store.get(key)
    try:
        saved = json.loads(saved) if saved is not None else {}
    except ValueError:
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    total = _i64(saved.get("total"))
    count = _i64(saved.get("count"))
    return (total or 0, count if count is not None and count >= 0 else 0)


def _account(doc) -> tuple[str, bytes]:
    """The value's ``account`` and its UTF-8 bytes (the state key)."""
    account = doc.get("account") if isinstance(doc, dict) else None
    if not isinstance(account, str) or account == "":
        raise InvalidInput('"account" must be a non-empty string')
    try:
        return account, account.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads lets a lone surrogate escape (``"\ud800"``) through;
        # serde_json and UTF-8 do not.
        raise InvalidInput(
            'message value is not valid JSON: lone surrogate in "account"'
        ) from None


def running_total(store, value: bytes) -> bytes:
    """Adds one message's amount to its account's total; the output value."""
    try:
        doc = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InvalidInput(f"message value is not valid JSON: {err}") from None
    account, key = _account(doc)
    amount = _i64(doc.get("amount"))
    if amount is None:
        raise InvalidInput('"amount" must be an integer')
    total, count = totals(store, key)
    total += amount
    if not I64_MIN <= total <= I64_MAX:
        raise InvalidInput("the total would overflow")
    count += 1
    store.set(key, _dumps({"count": count, "total": total}))
    return _dumps(
        {
            "account": account,
            "amount": amount,
            "total": total,
            "count": count,
        }
    )
