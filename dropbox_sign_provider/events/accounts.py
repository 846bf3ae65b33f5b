"""
The accounts whose callback events the receiver accepts, and the API keys that verify them.

They are the connections named by the Airflow option ``[dropbox_sign] callback_conn_ids``
(:data:`CALLBACK_CONN_IDS_OPTION`). Airflow reads its configuration once per process, so a change
of the option takes effect when the API server restarts. The connections themselves are read when
a callback arrives and kept for :data:`ACCOUNTS_TTL_SECONDS`: a rotated key (a changed
connection) is in use within a minute without a restart; until then an event signed with the new
key is refused and Dropbox Sign sends it again later.

Several connections may hold one account's key (one account, several connection ids): an event
is recorded for each of them, as each has its own board and assets.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from dropbox_sign_provider import CONFIG_SECTION, CONN_TYPE, configured_conn_ids
from dropbox_sign_provider.events.callback import CallbackEvent, check_conn_id
from dropbox_sign_provider.hooks.connection import api_key_from_connection

log = logging.getLogger(__name__)

#: Comma-separated ``dropbox_sign`` connection ids whose accounts may post events.
CALLBACK_CONN_IDS_OPTION = "callback_conn_ids"
#: How long the connections' keys are kept before they are read again.
ACCOUNTS_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class CallbackAccount:
    """
    An account whose events are accepted.

    :ivar conn_id: the ``dropbox_sign`` connection of the account.
    :ivar api_key: its API key, the HMAC key of its events' ``event_hash`` (kept out of ``repr``).
    """

    conn_id: str
    api_key: str = field(repr=False)


def callback_conn_ids() -> list[str]:
    """The connection ids of ``[dropbox_sign] callback_conn_ids``, in order, each once."""
    return configured_conn_ids(CALLBACK_CONN_IDS_OPTION)


def verifying_accounts(event: CallbackEvent, accounts: tuple[CallbackAccount, ...]) -> list[str]:
    """
    The connection ids of every account whose key verifies ``event``, in configured order.

    Every key is tried, not only up to the first that verifies: connections sharing a key each
    record the event.
    """
    return [account.conn_id for account in accounts if event.verified_by(account.api_key)]


class _AccountCache:
    # One per API server process: requests are served by several threads.
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accounts: tuple[CallbackAccount, ...] = ()
        self.loaded_at: float | None = None
        # A connection that cannot verify events is reported once per reason, not per callback.
        self.reported: set[tuple[str, str]] = set()


_cache = _AccountCache()


def callback_accounts() -> tuple[CallbackAccount, ...]:
    """
    The accounts that can verify events now: the configured connections that exist and hold an
    API key, read at most every :data:`ACCOUNTS_TTL_SECONDS`. Blocks (secrets backends, database):
    call it from a worker thread.
    """
    with _cache.lock:
        now = time.monotonic()
        if _cache.loaded_at is None or now - _cache.loaded_at >= ACCOUNTS_TTL_SECONDS:
            _cache.accounts = _load_accounts()
            _cache.loaded_at = now
        return _cache.accounts


def forget_callback_accounts() -> None:
    """Drop the kept keys and reported problems: the next callback reads the connections again."""
    with _cache.lock:
        _cache.accounts = ()
        _cache.loaded_at = None
        _cache.reported.clear()


def _load_accounts() -> tuple[CallbackAccount, ...]:
    from airflow.models.connection import Connection
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    accounts = []
    for conn_id in callback_conn_ids():
        try:
            check_conn_id(conn_id)
        except ValueError as exc:
            _report(conn_id, f"{exc}; fix [{CONFIG_SECTION}] {CALLBACK_CONN_IDS_OPTION}")
            continue
        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            _report(conn_id, f"connection {conn_id!r} is not defined")
            continue
        if conn.conn_type != CONN_TYPE:
            _report(
                conn_id,
                f"connection {conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}: "
                "its password is not a Dropbox Sign API key",
            )
            continue
        api_key = api_key_from_connection(conn)
        if not api_key:
            # event_hash is keyed with the account's API key; an access token is no substitute.
            _report(
                conn_id,
                f"connection {conn_id!r} has no API key (password): events are signed with the "
                "account's API key, and an OAuth access_token cannot verify them",
            )
            continue
        accounts.append(CallbackAccount(conn_id, api_key))
    return tuple(accounts)


def _report(conn_id: str, reason: str) -> None:
    if (conn_id, reason) not in _cache.reported:
        _cache.reported.add((conn_id, reason))
        log.warning("Dropbox Sign callbacks: events of %r cannot be verified: %s", conn_id, reason)
