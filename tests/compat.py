"""
Airflow names the tests use whose home moved between the supported versions (3.1 to 3.3).

Exceptions come from ``airflow.providers.common.compat.sdk``, which knows where each lives; the rest
is here, so every test module imports on every supported Airflow. A test that needs behaviour only a
newer Airflow has is marked ``@requires_airflow_3_2(why)`` or ``@requires_airflow_3_3(why)`` and is
skipped on older ones with that reason.
"""

from __future__ import annotations

from typing import Any

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


_kept_alive: list[Any] = []


def keep_dag_test_execution_apis_alive() -> None:
    """
    Keep each in-process execution API that Airflow 3.2's ``dag.test()`` starts alive.

    3.2 drops the API object while the task still uses its transport; once it is collected its
    lifespan closes, and every later call of the task fails ("'State' object has no attribute
    'svcs_registry'"). 3.3 ties the lifespan to the transport instead. Nothing changes elsewhere.
    """
    if not AIRFLOW_V_3_2_PLUS or AIRFLOW_V_3_3_PLUS:
        return
    from airflow.sdk.execution_time import supervisor

    start_api = supervisor.in_process_api_server

    def kept_api() -> Any:
        api = start_api()
        _kept_alive.append(api)
        return api

    supervisor.in_process_api_server = kept_api


def answer_hitl_requests_in_dag_test() -> None:
    """
    Let ``dag.test()`` run the human-in-the-loop trigger on Airflow 3.1 and 3.2.

    There a waiting approval defers to Airflow's ``HITLTrigger``, which reads (and on time-out
    writes) the answer through its supervisor. The triggerer's supervisor serves those two requests;
    the in-process one under which ``dag.test()`` runs a deferred task's trigger does not
    ("Unhandled request"), so the approval would end with no answer. This serves them the way the
    triggerer does. 3.3 parks the task as ``awaiting_input`` instead, with no trigger: nothing
    changes there.
    """
    if AIRFLOW_V_3_3_PLUS:
        return
    from airflow.jobs.triggerer_job_runner import HITLDetailResponseResult
    from airflow.sdk.execution_time import supervisor
    from airflow.sdk.execution_time.comms import GetHITLDetailResponse, UpdateHITLDetail

    handle = supervisor.ActivitySubprocess._handle_request

    def handle_request(self: Any, msg: Any, log: Any, req_id: int) -> None:
        if isinstance(msg, GetHITLDetailResponse):
            answer = self.client.hitl.get_detail_response(ti_id=msg.ti_id)
        elif isinstance(msg, UpdateHITLDetail):
            answer = self.client.hitl.update_response(
                ti_id=msg.ti_id, chosen_options=msg.chosen_options, params_input=msg.params_input
            )
        else:
            handle(self, msg, log, req_id)
            return
        self.send_msg(
            HITLDetailResponseResult.from_api_response(response=answer), request_id=req_id, error=None
        )

    supervisor.ActivitySubprocess._handle_request = handle_request


__all__ = [
    "DagBag",
    "answer_hitl_requests_in_dag_test",
    "keep_dag_test_execution_apis_alive",
    "requires_airflow_3_2",
    "requires_airflow_3_3",
    "serde",
]
