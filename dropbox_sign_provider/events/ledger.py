"""
The ledger of an event time.

Each recorded ``(account, event_type, event_time)`` has one Airflow Variable
(:func:`event_ledger_variable`) listing the requests recorded for it and the bytes they took. A
redelivery is recognised there with one lookup by Variable key, the column Airflow keeps a unique
index on; the key starts with the time zero-padded, so the ledgers that left the freshness window
are one key range, deleted through that same index (:func:`expired_ledgers_range`).
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

from dropbox_sign_provider.events.callback import (
    MAX_EVENT_AGE_SECONDS,
    MAX_RECORDED_BYTES_PER_EVENT_TIME,
    MAX_REQUESTS_PER_EVENT_TIME,
    CallbackEvent,
    check_conn_id,
)

_LEDGER_PREFIX = "dropbox_sign_event_ids."
# Airflow's Variable keys are at most 250 characters (ID_LEN).
_MAX_VARIABLE_KEY = 250


def event_ledger_variable(dropbox_sign_conn_id: str, event_type: str, event_time: str | int) -> str:
    """
    The key of the Variable listing the requests recorded for one account's events of one type and
    second: ``dropbox_sign_event_ids.<event_time, 12 digits>.<connection id>.<event type>``.

    The time comes first and zero-padded, so that all keys sort by time and the expired ones, of
    every account, are one key range (:func:`expired_ledgers_range`). After the connection id it
    could not be: ``a.0...`` would sort inside the range of connection ``a``.
    """
    conn_part = check_conn_id(dropbox_sign_conn_id)
    # Room for "<12 digits>." and ".<event type of up to 64>"; a longer connection id goes by its
    # digest.
    if len(_LEDGER_PREFIX) + 13 + len(conn_part) + 1 + 64 > _MAX_VARIABLE_KEY:
        conn_part = "sha256-" + hashlib.sha256(conn_part.encode()).hexdigest()[:32]
    return f"{_LEDGER_PREFIX}{int(event_time):012d}.{conn_part}.{event_type}"


def expired_ledgers_range(now: float) -> tuple[str, str]:
    """
    The keys ``[low, high)`` of the ledgers, of every account, whose events are too old to be
    recorded now (:func:`freshness_problem`).

    :param now: the current time, epoch seconds.
    """
    oldest_kept = max(0, int(now) - MAX_EVENT_AGE_SECONDS)
    return _LEDGER_PREFIX, f"{_LEDGER_PREFIX}{oldest_kept:012d}"


class LedgerVerdict(str, enum.Enum):
    """What the ledger of an event time says about one more event of that time."""

    #: not recorded before, and within the bounds: record it
    NEW = "new"
    #: recorded before: a redelivery
    REDELIVERY = "redelivery"
    #: :data:`MAX_REQUESTS_PER_EVENT_TIME` requests recorded for this time already
    TOO_MANY_REQUESTS = "too_many_requests"
    #: :data:`MAX_RECORDED_BYTES_PER_EVENT_TIME` would be exceeded
    TOO_MANY_BYTES = "too_many_bytes"


def add_to_ledger(ledger: Any, event: CallbackEvent) -> tuple[LedgerVerdict, dict[str, Any] | None]:
    """
    Decide whether ``event`` is recorded, against what its event time recorded before.

    :param ledger: the ledger as stored (``None``, or anything unreadable, starts a new one).
    :param event: a verified event.
    :return: the verdict, and the ledger with the event added when it is :attr:`LedgerVerdict.NEW`.
    """
    if isinstance(ledger, str | bytes):
        try:
            ledger = json.loads(ledger)
        except ValueError:
            ledger = None
    ids: list[str] = []
    used = 0
    if isinstance(ledger, dict) and isinstance(ledger.get("ids"), list):
        ids = [i for i in ledger["ids"] if isinstance(i, str)]
    if isinstance(ledger, dict) and isinstance(ledger.get("bytes"), int):
        used = ledger["bytes"]
    request = event.signature_request_id or "-"
    if event.related_signature_id is not None:
        # One signer's event of a request is not another's: both are recorded (the request still
        # counts towards the bound once per signer, as each is one more asset event).
        request = f"{request}/{event.related_signature_id}"
    if request in ids:
        return LedgerVerdict.REDELIVERY, None
    if len(ids) >= MAX_REQUESTS_PER_EVENT_TIME:
        return LedgerVerdict.TOO_MANY_REQUESTS, None
    size = event.recorded_bytes()
    if used + size > MAX_RECORDED_BYTES_PER_EVENT_TIME:
        return LedgerVerdict.TOO_MANY_BYTES, None
    return LedgerVerdict.NEW, {"ids": [*ids, request], "bytes": used + size}
