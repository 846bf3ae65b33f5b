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
    from pydantic import JsonValue


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


__all__ = ["AIRFLOW_VERSION", "AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS", "amask_secret"]
