"""
What state a signature request is in, decided from what the API answered: the one place that
decides, used by the operator, the sensor's poke and the trigger alike.

Decisions follow the HTTP status (each typed error says which state it tells, see
:mod:`dropbox_sign_provider.exceptions`) and the request's documented fields, never the text of
``error_msg``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any, Protocol


class RequestState(str, enum.Enum):
    """The state of a signature request, as far as cancelling it is concerned."""

    #: the cancel call was accepted (200) or one is already being processed (409): queued
    CANCEL_REQUESTED = "cancel_requested"
    #: the request answers 410 ``deleted``: the cancellation has taken effect
    CANCELED = "canceled"
    #: every signer signed: it can no longer be cancelled
    COMPLETED = "completed"
    #: a signer declined: there is nothing left to cancel
    DECLINED = "declined"
    #: past its ``expires_at`` (its open signatures read ``expired``): nobody can sign it any more,
    #: so there is nothing to cancel, and Dropbox Sign may refuse to (``signature_request_expired``)
    EXPIRED = "expired"
    #: 404: no such request for this account
    NOT_FOUND = "not_found"
    #: 403: the credentials are not the sender's nor the app owner's
    FORBIDDEN = "forbidden"
    #: 401: the credentials were refused
    UNAUTHORIZED = "unauthorized"
    #: still out for signature
    PENDING = "pending"
    #: no verdict this time: rate limited, a server error or no answer; ask again later
    TRANSIENT = "transient"

    @property
    def is_final(self) -> bool:
        """Whether waiting longer can change this state."""
        return self not in (RequestState.PENDING, RequestState.CANCEL_REQUESTED, RequestState.TRANSIENT)


class Refusal(Protocol):
    """
    An answer that is an error: :class:`~dropbox_sign_provider.exceptions.DropboxSignError`. Each
    error type declares the state it tells, so the errors import this module, not the reverse.
    """

    def told_state(self) -> RequestState:
        """The state this error tells; raises the error itself when it tells none."""
        ...


def request_state(answer: Mapping[str, Any] | Refusal | None, now: float | None = None) -> RequestState:
    """
    Decide the state of a signature request from one answer of the API.

    :param answer: what a call answered: the ``signature_request`` object of a successful
        ``GET /signature_request/{id}``; ``None`` for a successful cancel call; or the
        :class:`~dropbox_sign_provider.exceptions.DropboxSignError` a call raised.
    :param now: the current Unix time, for ``expires_at``; ``None``: the clock's.
    :raises DropboxSignError: ``answer`` itself when it is an error that says nothing about the
        request's state (400 ``bad_request``, 402 ``payment_required``, ...): such an error is a
        problem to report, not a state to wait on.
    """
    if answer is None:
        return RequestState.CANCEL_REQUESTED
    if not isinstance(answer, Mapping):
        return answer.told_state()
    if answer.get("is_complete"):
        return RequestState.COMPLETED
    if answer.get("is_declined"):
        return RequestState.DECLINED
    if expired(answer, time.time() if now is None else now):
        return RequestState.EXPIRED
    return RequestState.PENDING


def expired(request: Mapping[str, Any], now: float) -> bool:
    """
    Whether an incomplete request has expired: its ``expires_at`` has passed, or Dropbox Sign
    already shows an open signature as ``expired`` (it does once ``expires_at`` passes).

    :param request: the signature request as the API answers it.
    :param now: the current Unix time.
    """
    expires_at = request.get("expires_at")
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool) and expires_at <= now:
        return True
    signatures = request.get("signatures")
    return isinstance(signatures, list) and any(
        isinstance(s, Mapping) and s.get("status_code") == "expired" for s in signatures
    )
