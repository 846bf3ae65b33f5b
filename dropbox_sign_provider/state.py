"""
What state a signature request is in, decided from what the API answered: the one place that
decides, used by the operator, the sensor's poke and the trigger alike.

Decisions follow the HTTP status (each typed error says which state it tells, see
:mod:`dropbox_sign_provider.exceptions`) and the request's documented fields, never the text of
``error_msg``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.outcomes import RequestState

__all__ = ["RequestState", "request_state"]


def request_state(answer: Mapping[str, Any] | DropboxSignError | None) -> RequestState:
    """
    Decide the state of a signature request from one answer of the API.

    :param answer: what a call answered: the ``signature_request`` object of a successful
        ``GET /signature_request/{id}``; ``None`` for a successful cancel call; or the
        :class:`~dropbox_sign_provider.exceptions.DropboxSignError` a call raised.
    :raises DropboxSignError: ``answer`` itself when it is an error that says nothing about the
        request's state (400 ``bad_request``, 402 ``payment_required``, ...): such an error is a
        problem to report, not a state to wait on.
    """
    if answer is None:
        return RequestState.CANCEL_REQUESTED
    if isinstance(answer, DropboxSignError):
        if answer.state is None:
            raise answer
        return answer.state
    if answer.get("is_complete"):
        return RequestState.COMPLETED
    if answer.get("is_declined"):
        return RequestState.DECLINED
    return RequestState.PENDING
