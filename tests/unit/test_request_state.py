"""
Which states of a signature request end a wait. The decision of a state from what the API answers
is in tests/integration, fed with the emulator's answers.
"""

from __future__ import annotations

import pytest

from dropbox_sign_provider.cancellation.state import RequestState

S = RequestState


@pytest.mark.parametrize(
    ("state", "final"),
    [
        (S.CANCEL_REQUESTED, False),
        (S.PENDING, False),
        (S.TRANSIENT, False),
        (S.CANCELED, True),
        (S.COMPLETED, True),
        (S.DECLINED, True),
        (S.NOT_FOUND, True),
        (S.FORBIDDEN, True),
        (S.UNAUTHORIZED, True),
    ],
)
def test_which_states_are_final(state: RequestState, final: bool) -> None:
    assert state.is_final is final
