"""
What differs between the Airflow versions this provider supports, in one place.

The provider supports the latest patch of Airflow 3.1, 3.2 and 3.3. Code elsewhere imports a
version-dependent name from here instead of checking the version itself, the way Airflow's own
providers keep a ``version_compat`` module. Each name falls back to what the older Airflow offers, and
the docs' "Supported versions" page says what that costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow import __version__ as _airflow_version
from packaging.version import Version

if TYPE_CHECKING:
    from airflow.models.asset import AssetEvent, AssetModel
    from pydantic import JsonValue
    from sqlalchemy.orm import Session


# The release alone, so a pre-release or dev build of 3.3 ("3.3.0rc1", "3.3.0.dev0") counts as 3.3.
AIRFLOW_VERSION = Version(Version(_airflow_version).base_version)
AIRFLOW_V_3_2_PLUS = AIRFLOW_VERSION.release >= (3, 2)
AIRFLOW_V_3_3_PLUS = AIRFLOW_VERSION.release >= (3, 3)


async def amask_secret(secret: JsonValue, name: str | None = None) -> None:
    """
    Mask ``secret`` in logs from async code (a trigger, the async hook).

    The secret is masked in this process and the supervisor is told, because in the triggerer it
    is the supervisor that writes a trigger's log lines. Airflow 3.3 does both without blocking the
    event loop. Before 3.3 only the sync ``mask_secret`` exists, and its call to the supervisor
    cannot run on the event loop's own thread (3.1 refuses it, quietly): it runs in a worker
    thread instead, the way Airflow's own sync connection lookups from triggers do.
    """
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as _amask_secret

        await _amask_secret(secret, name)
    else:
        from airflow.sdk.log import mask_secret
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret, name)


def register_api_asset_event(
    *, asset: AssetModel, extra: dict[str, JsonValue], session: Session
) -> AssetEvent | None:
    """
    Record an event on ``asset`` and queue the DAGs scheduled on it, as the REST API's
    ``create_asset_event`` does, in ``session`` (committed by the caller).

    The event comes from outside Airflow with no Airflow user. Airflow 3.3 asks API-made events for
    the caller's teams (used only with ``[core] multi_team``): none, so only DAGs of no team are
    queued, as for a REST API user of no team. Airflow 3.1 and 3.2 have no teams here. Every version
    stamps the event with the current time (the REST API's ``timestamp`` argument is ignored).
    """
    from airflow.assets.manager import asset_manager

    if AIRFLOW_V_3_3_PLUS:
        return asset_manager.register_asset_change(
            asset=asset, extra=extra, source_is_api=True, api_user_teams=set(), session=session
        )
    return asset_manager.register_asset_change(asset=asset, extra=extra, session=session)


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "amask_secret",
    "register_api_asset_event",
]
