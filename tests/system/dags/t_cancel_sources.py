"""Ids reaching the operator from an upstream task's XCom, from a template, and by dynamic mapping."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator


def ids_param() -> Param:
    # One Param per key: a shared instance would hold whichever value was resolved last.
    return Param([], type="array", items={"type": "string"})


with DAG(
    dag_id="t_cancel_sources",
    schedule=None,
    params={"from_xcom": ids_param(), "from_template": ids_param(), "mapped": ids_param()},
) as dag:

    @task
    def find(name: str, params: dict[str, Any] | None = None) -> list[str]:
        assert params is not None
        return list(params[name])

    CancelSignatureRequestOperator(
        task_id="cancel_from_xcom",
        signature_request_ids=find.override(task_id="find_from_xcom")(name="from_xcom"),
        wait_for_confirmation=True,
        deferrable=True,
        poke_interval=0.1,
        timeout=30,
        recancel_after=10,
    )
    find.override(task_id="find_from_template")(name="from_template") >> CancelSignatureRequestOperator(
        task_id="cancel_from_template",
        signature_request_ids="{{ ti.xcom_pull(task_ids='find_from_template') }}",
    )
    CancelSignatureRequestOperator.partial(task_id="cancel_mapped", on_completed="ignore").expand(
        signature_request_ids=find.override(task_id="find_mapped")(name="mapped")
    )
