"""
A retry after partial progress: what the first try had accepted is not sent again, nor reported as
cancelled by someone else.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import requests
from airflow.sdk import DAG, Param

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator


def _trouble_is_over(context: Any) -> None:
    # Whatever kept Dropbox Sign from answering is gone by the time the task is retried.
    requests.delete(f"{context['params']['emulator_admin_url']}/faults", timeout=10).raise_for_status()


with DAG(
    dag_id="t_cancel_retry",
    schedule=None,
    params={"ids": Param([], type="array", items={"type": "string"}), "emulator_admin_url": Param("")},
) as dag:
    CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ params.ids }}",
        retries=1,
        # Long enough for the first try's cancellation to take effect (0.2 s in the emulator).
        retry_delay=timedelta(seconds=0.5),
        on_retry_callback=_trouble_is_over,
    )
