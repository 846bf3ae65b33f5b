"""
The board of recent events.

The receiver keeps, per account, the last :data:`MAX_RECENT_EVENTS` events in one Airflow Variable
(:func:`recent_events_variable`): ``{"seq": n, "events": [[seq, key, signature_request_id], ...]}``.
Waiting triggers read that one Variable (one read per triggerer process per check, whatever the
number of waiting ids) and read at once the requests it names. The receiver writes it under a row
lock, so concurrent deliveries lose no entry; an entry a trigger never sees (the board rotated
past it, the receiver was down) costs latency only: the waiting id is still polled.
"""

from __future__ import annotations

import json
from typing import Any

from dropbox_sign_provider.events.callback import CallbackEvent, check_conn_id

#: Events kept on an account's board of recent events, for wake-ups and de-duplication.
MAX_RECENT_EVENTS = 1000


def recent_events_variable(dropbox_sign_conn_id: str) -> str:
    """The key of the Variable holding one account's board of recent events."""
    return f"dropbox_sign_recent_events.{check_conn_id(dropbox_sign_conn_id)}"


def add_recent_event(board: Any, event: CallbackEvent) -> dict[str, Any] | None:
    """
    The board with ``event`` added, or ``None`` when it is already there (a redelivery).

    :param board: the board as stored (``None`` or anything unreadable starts a new one).
    :param event: a verified event.
    """
    seq, events = _board(board)
    if any(entry[1] == event.key for entry in events):
        return None
    seq += 1
    events = [*events, [seq, event.key, event.signature_request_id]][-MAX_RECENT_EVENTS:]
    return {"seq": seq, "events": events}


def recent_event_requests(board: Any, after_seq: int | None = None) -> tuple[int, dict[str, int]]:
    """
    The requests named on a board since a sequence number.

    :param board: the board as stored (a dict, its JSON text, or ``None``).
    :param after_seq: the last sequence number already seen; ``None`` for every entry. A board whose
        sequence went back (its Variable was deleted) is read whole.
    :return: the board's sequence number and signature request id -> the latest entry naming it.
    """
    seq, events = _board(board)
    if after_seq is not None and seq < after_seq:
        after_seq = None
    named: dict[str, int] = {}
    for entry_seq, _key, sr_id in events:
        if sr_id and (after_seq is None or entry_seq > after_seq):
            named[sr_id] = entry_seq
    return seq, named


def board_problem(board: Any) -> str | None:
    """
    Why a stored board cannot be read (``None`` when it can, or when nothing is stored yet).

    A value that is not a board (encrypted with another Fernet key, written by hand) would otherwise
    wake nothing, silently.
    """
    if board is None:
        return None
    if isinstance(board, str | bytes):
        try:
            board = json.loads(board)
        except ValueError:
            return "it is not JSON (encrypted with another fernet_key?)"
    if (
        not isinstance(board, dict)
        or not isinstance(board.get("seq"), int)
        or not isinstance(board.get("events"), list)
    ):
        return "it is not a board of recent events"
    return None


def _board(board: Any) -> tuple[int, list[list[Any]]]:
    # Whatever is stored is read defensively: the board is a hint, and a bad one means polling.
    if board_problem(board) is not None or board is None:
        return 0, []
    if isinstance(board, str | bytes):
        board = json.loads(board)
    valid = [
        e
        for e in board["events"]
        if isinstance(e, list)
        and len(e) == 3
        and isinstance(e[0], int)
        and isinstance(e[1], str)
        and (e[2] is None or isinstance(e[2], str))
    ]
    return board["seq"], valid
