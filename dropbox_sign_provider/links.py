"""Operator extra link to a signature request's page in Dropbox Sign."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

DETAILS_URL = "https://app.hellosign.com/home/manage?guid={signature_request_id}"


def details_url(signature_request_id: str) -> str:
    """The page of a signature request in Dropbox Sign's web app."""
    return DETAILS_URL.format(signature_request_id=signature_request_id)


class DropboxSignRequestLink(BaseOperatorLink):
    """
    "Dropbox Sign" button on a task that handled a single signature request.

    The task stores the URL under ``xcom_key``; the UI reads it from there.
    """

    name = "Dropbox Sign"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The stored URL, or an empty string when the task handled several requests."""
        from airflow.providers.common.compat.sdk import XCom

        return str(XCom.get_value(ti_key=ti_key, key=self.xcom_key) or "")
