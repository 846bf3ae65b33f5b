"""
What a verified callback event leaves in Airflow's metadata database.

Once per event, whatever the number of deliveries:

1. an entry on the account's board of recent events (an Airflow Variable, see
   :mod:`dropbox_sign_provider.events`), which wakes the triggers waiting on its request;
2. an asset event on the asset of the account's events of that type, which queues the DAGs
   scheduled on it, made the way Airflow's REST API makes one. No DAG schedules on the asset: no
   asset event, the board alone.

A redelivery changes nothing. It is recognised on the board (the last
:data:`~dropbox_sign_provider.events.MAX_RECENT_EVENTS` events) and, since Dropbox Sign retries for
about three days, also among the asset's events since the event's time.

Both are written in one transaction that first locks the board's row, so two deliveries of one
event cannot both record it: on databases that lock rows, across API server processes too; in one
process a lock serialises the writers whatever the database (SQLite locks no row, and writes of
two processes there can fail with "database is locked": the request is then refused and delivered
again).
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from dropbox_sign_provider.events import (
    MAX_RECENT_EVENTS,
    CallbackEvent,
    add_recent_event,
    event_asset_uri,
    recent_events_variable,
)
from dropbox_sign_provider.version_compat import register_api_asset_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: How far before an event's time its earlier asset events are looked for: the receiving
#: machine's clock may be behind Dropbox Sign's.
CLOCK_SKEW = timedelta(minutes=10)

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


def board_description(dropbox_sign_conn_id: str) -> str:
    """The description of the board's Variable, as the Variables page shows it."""
    return (
        f"Dropbox Sign: the last {MAX_RECENT_EVENTS} verified callback events of connection "
        f"{dropbox_sign_conn_id!r}, written by the provider's callback receiver "
        "(POST /dropbox-sign/callback) and read by waiting triggers to wake up early. "
        "Not a credential; deleting it only delays those wake-ups."
    )


def record_event(event: CallbackEvent, dropbox_sign_conn_id: str) -> Recorded:
    """
    Record a verified event (not ``callback_test``) of an account, once.

    Blocks on the database: call it from a worker thread.

    :param event: an event whose hash the account's key verifies.
    :param dropbox_sign_conn_id: the connection of that account.
    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot record it; nothing is then
        recorded, and the delivery should be refused so that Dropbox Sign sends it again.
    """
    from sqlalchemy.exc import IntegrityError

    with _record_lock:
        try:
            return _record_in_new_session(event, dropbox_sign_conn_id)
        except IntegrityError:
            # Another process created the board first; now there is a row to lock, and the
            # second attempt sees the other process's writes.
            return _record_in_new_session(event, dropbox_sign_conn_id)


def _record_in_new_session(event: CallbackEvent, conn_id: str) -> Recorded:
    from airflow.utils.session import create_session

    # Committed when the block ends, rolled back on an error.
    with create_session() as session:
        return _record(session, event, conn_id)


def _record(session: Session, event: CallbackEvent, conn_id: str) -> Recorded:
    from airflow.models.asset import AssetModel
    from airflow.models.variable import Variable
    from sqlalchemy import select

    key = recent_events_variable(conn_id)
    row = session.scalar(select(Variable).where(Variable.key == key).with_for_update())
    board = add_recent_event(row.val if row is not None else None, event)
    if board is None:
        return Recorded.REDELIVERY

    uri = event_asset_uri(event.event_type, conn_id)
    asset = session.scalar(select(AssetModel).where(AssetModel.uri == uri, AssetModel.active.has()))
    if asset is not None and _has_asset_event(session, asset.id, event):
        return Recorded.REDELIVERY

    # The board is written and flushed before the asset event: when another process created the
    # board meanwhile, the unique key fails here, before any asset event is made or announced.
    value = json.dumps(board, separators=(",", ":"))
    if row is None:
        session.add(Variable(key=key, val=value, description=board_description(conn_id)))
    else:
        row.set_val(value)
    session.flush()

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


def _has_asset_event(session: Session, asset_id: int, event: CallbackEvent) -> bool:
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    try:
        since = datetime.fromtimestamp(int(event.event_time), tz=timezone.utc) - CLOCK_SKEW
    except (OverflowError, OSError, ValueError):
        return False  # a time past year 9999: no asset event can be that recent
    # The extra's JSON is compared here, not in SQL, the same way on every database.
    extras = session.scalars(
        select(AssetEvent.extra).where(AssetEvent.asset_id == asset_id, AssetEvent.timestamp >= since)
    )
    return any(isinstance(extra, dict) and extra.get("event_key") == event.key for extra in extras)
