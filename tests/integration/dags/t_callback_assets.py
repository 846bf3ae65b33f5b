"""Runs for each verified canceled or all-signed event of two accounts: the receiver's assets."""

from __future__ import annotations

from airflow.sdk import DAG, task

from dropbox_sign_provider.events.assets import signature_request_event_asset

with DAG(
    dag_id="t_callback_assets",
    schedule=(
        signature_request_event_asset("signature_request_canceled", "ds_cb_a")
        | signature_request_event_asset("signature_request_all_signed", "ds_cb_a")
        | signature_request_event_asset("signature_request_canceled", "ds_cb_b")
    ),
) as dag:

    @task
    def read_the_request() -> None:
        """A real consumer reads the request before doing anything it cannot undo."""

    read_the_request()
