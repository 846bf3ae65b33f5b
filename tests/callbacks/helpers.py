"""Helpers of the callback receiver's tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

from typing import Any

from dropbox_sign_provider.events.assets import event_asset_uri
from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT

#: The asset of ``ds_cb_a``'s cancellations, on which the test DAG is scheduled.
CANCELED_A = event_asset_uri("signature_request_canceled", "ds_cb_a")


def assert_acknowledged(response: Any) -> None:
    """The answer Dropbox Sign takes as delivered: 200, ``Hello API Event Received``, plain text."""
    assert response.status_code == 200, response.text
    assert response.text == CALLBACK_ACKNOWLEDGEMENT
    assert response.headers["content-type"].startswith("text/plain")
