"""The Airflow assets that Dropbox Sign events become: ``dropbox-sign://<connection id>/<event type>``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.events.callback import CALLBACK_TEST, EVENT_TYPES, check_conn_id

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.sdk import Asset

#: The URI scheme of the event assets: ``dropbox-sign://<connection id>/<event type>``.
ASSET_SCHEME = "dropbox-sign"


def event_asset_uri(event_type: str, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME) -> str:
    """
    The URI of the asset of one account's events of one type.

    :param event_type: e.g. ``signature_request_canceled``.
    :param dropbox_sign_conn_id: the connection of the account.
    :raises ValueError: naming an unknown event type or a bad connection id.
    """
    if event_type not in EVENT_TYPES or event_type == CALLBACK_TEST:
        raise ValueError(f"event_type {event_type!r} is not a Dropbox Sign event type with an asset")
    return f"{ASSET_SCHEME}://{check_conn_id(dropbox_sign_conn_id)}/{event_type}"


def signature_request_event_asset(event_type: str, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME) -> Asset:
    """
    The asset a DAG schedules on to run for each verified event of one type::

        schedule = [signature_request_event_asset("signature_request_canceled")]

    :param event_type: e.g. ``signature_request_all_signed``.
    :param dropbox_sign_conn_id: the connection whose account sends the events.
    """
    from airflow.sdk import Asset

    uri = event_asset_uri(event_type, dropbox_sign_conn_id)
    return Asset(uri=uri, name=uri, group="dropbox_sign")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Check a ``dropbox-sign://`` asset URI (registered with Airflow in the provider info).

    :raises ValueError: naming what is wrong.
    """
    event_type = uri.path.strip("/")
    event_asset_uri(event_type, uri.netloc)
    if uri.query or uri.fragment:
        raise ValueError(f"a {ASSET_SCHEME} asset URI has no query or fragment: {uri.geturl()!r}")
    return uri
