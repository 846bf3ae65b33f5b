"""
Airflow names the tests use whose home moved between the supported versions (3.1 to 3.3).

Exceptions come from ``airflow.providers.common.compat.sdk``, which knows where each lives; the rest
is here, so every test module imports on every supported Airflow. A test that needs behaviour only a
newer Airflow has is marked ``@requires_airflow_3_2(why)`` or ``@requires_airflow_3_3(why)`` and is
skipped on older ones with that reason.
"""

from __future__ import annotations

import pytest

from dropbox_sign_provider.version_compat import AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS

if AIRFLOW_V_3_2_PLUS:
    # Trigger kwargs go through the SDK's serde since 3.2; it rejects anything but plain data.
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import serde
else:
    # 3.1 has the same serde in core (the SDK's copy came from it) and DagBag among the models.
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined,unused-ignore]
    from airflow.serialization import serde  # type: ignore[no-redef,attr-defined,unused-ignore]


def requires_airflow_3_2(why: str) -> pytest.MarkDecorator:
    """Skip the test before Airflow 3.2, saying ``why`` it needs 3.2."""
    return pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason=f"needs Airflow 3.2 or newer: {why}")


def requires_airflow_3_3(why: str) -> pytest.MarkDecorator:
    """Skip the test before Airflow 3.3, saying ``why`` it needs 3.3."""
    return pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason=f"needs Airflow 3.3 or newer: {why}")


__all__ = ["DagBag", "requires_airflow_3_2", "requires_airflow_3_3", "serde"]
