"""
The settings of a wait for confirmation, shared by the operator's wait, the sensor and the
trigger: their defaults, named once, and the checks that refuse settings that cannot work,
naming the value, when the DAG file is parsed.
"""

from __future__ import annotations

from typing import Any

from dropbox_sign_provider.outcomes import ON_COMPLETED_CHOICES

#: Dropbox Sign: "if the event has not arrived within 60 minutes, retry the cancellation".
DEFAULT_RECANCEL_AFTER = 3600.0
DEFAULT_MAX_CANCEL_ATTEMPTS = 3
DEFAULT_POLL_INTERVAL = 60.0

#: Long enough for the first cancel and two re-cancels under the 60-minute rule, and some slack.
DEFAULT_TIMEOUT = 4 * 3600.0


def check_wait_settings(
    poll_interval: float, timeout: float, recancel_after: float, max_cancel_attempts: int
) -> None:
    """
    Refuse wait settings that cannot work, naming the value.

    A ``timeout`` shorter than ``recancel_after`` is accepted: the wait then simply ends before any
    re-cancel could fall due (see :func:`~dropbox_sign_provider.confirmation.log_no_recancel`).

    :raises ValueError: for a poll interval, timeout or re-cancel period that is not a positive
        number (booleans included), or attempts that are not an integer of 1 or more.
    """
    for name, value in (
        ("poke_interval", poll_interval),
        ("timeout", timeout),
        ("recancel_after", recancel_after),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} {value!r} must be a positive number of seconds")
    if (
        isinstance(max_cancel_attempts, bool)
        or not isinstance(max_cancel_attempts, int)
        or max_cancel_attempts < 1
    ):
        raise ValueError(f"max_cancel_attempts {max_cancel_attempts!r} must be an integer of 1 or more")


def check_on_completed(on_completed: Any) -> None:
    """:raises ValueError: when ``on_completed`` is not ``fail`` or ``ignore``."""
    if on_completed not in ON_COMPLETED_CHOICES:
        raise ValueError(f"on_completed {on_completed!r} must be one of {', '.join(ON_COMPLETED_CHOICES)}")
