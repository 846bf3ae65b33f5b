"""A list step refuses, when the DAG file is parsed, every argument that cannot work, naming it."""

from __future__ import annotations

from typing import Any

import pytest

from dropbox_sign_provider.operators.signature_request import ListSignatureRequestsOperator


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_age": 0}, "max_age 0"),
        ({"max_age": "a fortnight"}, "max_age 'a fortnight'"),
        ({"bulk_send_job_id": "job-1"}, "bulk_send_job_id 'job-1'"),
        ({"bulk_send_job_id": "ab" * 20, "query": "title:NDA"}, "not both"),
        ({"max_cancellations": 0}, "max_cancellations 0"),
        ({"max_cancellations": True}, "max_cancellations True"),
        ({"over_cap": "warn"}, "over_cap 'warn'"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"dry_run": "maybe"}, "dry_run 'maybe'"),
        ({"require_approval": "sometimes"}, "require_approval 'sometimes'"),
    ],
)
def test_a_bad_argument_is_named_when_the_file_is_parsed(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ListSignatureRequestsOperator(task_id="find", **kwargs)


def test_templated_arguments_wait_until_the_task_runs() -> None:
    task = ListSignatureRequestsOperator(
        task_id="find",
        query="{{ params.query }}",
        max_age="{{ params.max_age_days }}",
        max_cancellations="{{ params.cap }}",
        over_cap="{{ params.over_cap }}",
        dry_run="{{ params.dry_run }}",
    )

    assert set(task.template_fields) >= {
        "query",
        "max_age",
        "max_cancellations",
        "over_cap",
        "dry_run_setting",
    }
