"""
What a verified callback event leaves in Airflow's metadata database.

Once per event, whatever the number of deliveries:

1. an entry on the account's board of recent events (an Airflow Variable, see
   :mod:`dropbox_sign_provider.events`), which wakes the triggers waiting on its request;
2. an asset event on the asset of the account's events of that type, which queues the DAGs
   scheduled on it, made the way Airflow's REST API makes one. No DAG schedules on the asset: no
   asset event, the board alone.

A redelivery changes nothing. It is recognised by the event time's ledger (one Variable per
account, event type and second, looked up by its key: see :mod:`dropbox_sign_provider.events`),
never by reading stored asset events: their ``extra`` is not indexed, and scanning it grows with
every event recorded. The ledger also bounds what one ``(event_type, event_time)`` may record, and
the ledgers of times too old to be recorded any more are deleted as a key range as new events come.

Everything is written in one transaction that first locks the board's row, so two deliveries of
one event cannot both record it: on databases that lock rows, across API server processes too; in
one process a lock serialises the writers whatever the database (SQLite locks no row, and writes of
two processes there can fail with "database is locked": the request is then refused and delivered
again).
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from dropbox_sign_provider.events.assets import event_asset_uri
from dropbox_sign_provider.events.board import MAX_RECENT_EVENTS, add_recent_event, recent_events_variable
from dropbox_sign_provider.events.callback import MAX_EVENT_AGE_SECONDS, CallbackEvent
from dropbox_sign_provider.events.ledger import (
    LedgerVerdict,
    add_to_ledger,
    event_ledger_variable,
    expired_ledgers_range,
)
from dropbox_sign_provider.version_compat import register_api_asset_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# Serialises recordings in this process: two threads must not read the same board and each write
# it back with only their own event.
_record_lock = threading.Lock()


class Recorded(str, enum.Enum):
    """What recording one verified event did."""

    #: the board has the event, and the event's asset an asset event
    ASSET_EVENT = "asset_event"
    #: the board has the event; no DAG schedules on its asset, which has no asset event
    BOARD_ONLY = "board_only"
    #: the event was recorded by an earlier delivery: nothing changed
    REDELIVERY = "redelivery"
    #: its event time recorded as many requests or bytes as one time may: nothing changed
    OVER_LIMIT = "over_limit"


def board_description(dropbox_sign_conn_id: str) -> str:
    """The description of the board's Variable, as the Variables page shows it."""
    return (
        f"Dropbox Sign: the last {MAX_RECENT_EVENTS} verified callback events of connection "
        f"{dropbox_sign_conn_id!r}, written by the provider's callback receiver "
        "(POST /dropbox-sign/callback) and read by waiting triggers to wake up early. "
        "Not a credential; deleting it only delays those wake-ups."
    )


def ledger_description(dropbox_sign_conn_id: str) -> str:
    """The description of a ledger's Variable, as the Variables page shows it."""
    return (
        f"Dropbox Sign: the requests recorded for one second of one event type of connection "
        f"{dropbox_sign_conn_id!r}, so that a redelivered event is recorded once. Written by the "
        "provider's callback receiver, deleted by it once Dropbox Sign can no longer deliver "
        f"events of that second ({MAX_EVENT_AGE_SECONDS} s later). Not a credential."
    )


def record_event(event: CallbackEvent, dropbox_sign_conn_id: str, now: float) -> Recorded:
    """
    Record a verified event (not ``callback_test``) of an account, once.

    Blocks on the database: call it from a worker thread.

    :param event: an event whose hash the account's key verifies, and recent enough to record.
    :param dropbox_sign_conn_id: the connection of that account.
    :param now: the current time (epoch seconds): ledgers of times older than the freshness window
        are deleted.
    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot record it; nothing is then
        recorded, and the delivery should be refused so that Dropbox Sign sends it again.
    """
    from sqlalchemy.exc import IntegrityError

    with _record_lock:
        try:
            return _record_in_new_session(event, dropbox_sign_conn_id, now)
        except IntegrityError:
            # Another process created the board or the ledger first; now there is a row to lock,
            # and the second attempt sees the other process's writes.
            return _record_in_new_session(event, dropbox_sign_conn_id, now)


def _record_in_new_session(event: CallbackEvent, conn_id: str, now: float) -> Recorded:
    from airflow.utils.session import create_session

    # Committed when the block ends, rolled back on an error.
    with create_session() as session:
        return _record(session, event, conn_id, now)


def _record(session: Session, event: CallbackEvent, conn_id: str, now: float) -> Recorded:
    from airflow.models.asset import AssetModel
    from airflow.models.variable import Variable
    from sqlalchemy import select

    # The board's row is locked first, by every writer of this account: the ledger read below
    # cannot change under this transaction.
    board_key = recent_events_variable(conn_id)
    board_row = session.scalar(select(Variable).where(Variable.key == board_key).with_for_update())
    ledger_key = event_ledger_variable(conn_id, event.event_type, event.event_time)
    ledger_row = session.scalar(select(Variable).where(Variable.key == ledger_key))
    verdict, ledger = add_to_ledger(ledger_row.val if ledger_row is not None else None, event)
    if verdict is LedgerVerdict.REDELIVERY:
        return Recorded.REDELIVERY
    if ledger is None:
        return Recorded.OVER_LIMIT
    board = add_recent_event(board_row.val if board_row is not None else None, event)

    # Board and ledger are written and flushed before the asset event: when another process
    # created one of them meanwhile, the unique key fails here, before any asset event is made.
    _put(session, ledger_row, ledger_key, ledger, ledger_description(conn_id))
    if board is None:
        # On the board but in no ledger: recorded before the ledger was (a release without
        # ledgers, or a ledger deleted by hand). The ledger now has it too.
        return Recorded.REDELIVERY
    _put(session, board_row, board_key, board, board_description(conn_id))
    session.flush()
    _forget_expired_ledgers(session, now)

    uri = event_asset_uri(event.event_type, conn_id)
    asset = session.scalar(select(AssetModel).where(AssetModel.uri == uri, AssetModel.active.has()))
    if asset is None:
        log.info(
            "Dropbox Sign event %s of %r: no DAG schedules on asset %s, so it has no asset event; "
            "the board of recent events has it",
            event.key,
            conn_id,
            uri,
        )
        return Recorded.BOARD_ONLY
    register_api_asset_event(asset=asset, extra=event.asset_extra(conn_id), session=session)
    return Recorded.ASSET_EVENT


def _put(session: Session, row: Any, key: str, value: dict[str, Any], description: str) -> None:
    from airflow.models.variable import Variable

    text = json.dumps(value, separators=(",", ":"))
    if row is None:
        session.add(Variable(key=key, val=text, description=description))
    else:
        row.set_val(text)


def _forget_expired_ledgers(session: Session, now: float) -> None:
    from airflow.models.variable import Variable
    from sqlalchemy import delete

    # A range of the unique key's index: cheap when there is nothing to delete, as on most calls.
    low, high = expired_ledgers_range(now)
    session.execute(
        delete(Variable).where(Variable.key >= low, Variable.key < high),
        execution_options={"synchronize_session": False},
    )
