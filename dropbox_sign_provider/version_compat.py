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
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= AIRFLOW_VERSION
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION


async def amask_secret(secret: JsonValue, name: str | None = None) -> None:
    """
    Mask ``secret`` in logs from async code (a trigger, the async hook).

    Airflow 3.3 tells the supervisor without blocking the event loop. Before 3.3 only the sync
    ``mask_secret`` exists: it masks the secret in this process, which is where a trigger's log lines
    are written, and its attempt to tell the supervisor from the event loop fails quietly, as it does
    when Airflow masks a connection's password for a trigger there.
    """
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as _amask_secret

        await _amask_secret(secret, name)
    else:
        from airflow.sdk.log import mask_secret

        mask_secret(secret, name)


__all__ = ["AIRFLOW_VERSION", "AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS", "amask_secret"]
