"""
The project's words for what happened to a signature request, defined once.

Glossary
--------
answer
    What one call to the API returned: the ``signature_request`` object, an empty ``{}`` for an
    accepted cancel, or a typed :class:`~dropbox_sign_provider.exceptions.DropboxSignError`.
state
    What an answer tells of a request, as far as cancelling it is concerned
    (:class:`RequestState`); decided from an answer by :func:`dropbox_sign_provider.state.request_state`.
verdict
    An answer that tells a final state (``canceled``, ``completed``, ``not_found``, ...). An answer
    with *no verdict* (429, 5xx, no answer, a deadline that passed) says nothing of the request:
    ask again later. Each error type says which it is (its ``state`` and ``retryable``).
outcome
    What became of one id in a task, reported per id in the task's result (:class:`Outcome`):
    a state, or one of the task's own words (``already_canceled``, ``would_cancel``,
    ``timeout``, ``error``).
watch
    The confirmation bookkeeping of a set of queued cancellations
    (:class:`~dropbox_sign_provider.confirmation.CancellationWatch`), kept as plain JSON so a
    trigger rebuilt after a restart resumes it.
settle
    Give a watched id its final outcome; the watch is done when every id is settled.
"""

from __future__ import annotations

import enum


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
