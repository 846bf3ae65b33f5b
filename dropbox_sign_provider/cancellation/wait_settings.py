"""
The settings of a wait for confirmation, shared by the operator's wait, the sensor and the
trigger: their defaults, named once, and the checks that refuse settings that cannot work,
naming the value, when the DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, NamedTuple

from dropbox_sign_provider import CONFIG_SECTION
from dropbox_sign_provider.cancellation.outcomes import ON_COMPLETED_CHOICES

#: Dropbox Sign: "if the event has not arrived within 60 minutes, retry the cancellation".
DEFAULT_RECANCEL_AFTER = 3600.0
DEFAULT_MAX_CANCEL_ATTEMPTS = 3
DEFAULT_POLL_INTERVAL = 60.0

#: Long enough for the first cancel and two re-cancels under the 60-minute rule, and some slack.
DEFAULT_TIMEOUT = 4 * 3600.0


#: A duration as a task accepts it: seconds, or a :class:`~datetime.timedelta`.
Duration = float | timedelta


class WaitSeconds(NamedTuple):
    """The durations of a wait, in seconds, as :func:`check_wait_settings` converted them."""

    poke_interval: float
    timeout: float
    recancel_after: float


def check_wait_settings(
    poll_interval: Duration, timeout: Duration, recancel_after: Duration, max_cancel_attempts: int
) -> WaitSeconds:
    """
    Refuse wait settings that cannot work, naming the value; return the durations in seconds.

    A ``timeout`` shorter than ``recancel_after`` is accepted: the wait then simply ends before any
    re-cancel could fall due (see :func:`~dropbox_sign_provider.cancellation.watch.log_no_recancel`).

    :raises ValueError: for a poll interval, timeout or re-cancel period that is neither a positive
        number of seconds (booleans included) nor a positive ``timedelta``, or attempts that are not
        an integer of 1 or more.
    """
    seconds = WaitSeconds(
        _seconds("poke_interval", poll_interval),
        _seconds("timeout", timeout),
        _seconds("recancel_after", recancel_after),
    )
    if (
        isinstance(max_cancel_attempts, bool)
        or not isinstance(max_cancel_attempts, int)
        or max_cancel_attempts < 1
    ):
        raise ValueError(f"max_cancel_attempts {max_cancel_attempts!r} must be an integer of 1 or more")
    return seconds


@dataclass(frozen=True)
class WaitSettings:
    """
    How a wait for confirmation runs, as the operator and the sensor take it: checked once, by
    :meth:`checked`, in seconds.

    :param poll_interval: seconds between reads of every pending id.
    :param timeout: seconds from the start of the wait to its deadline.
    :param recancel_after: seconds after a cancel without confirmation before cancelling again.
    :param max_cancel_attempts: cancels per id at most, counting the first one.
    :param on_completed: ``fail`` or ``ignore`` for requests signed or declined before the
        cancellation took effect.
    :param event_first: read an id at once when a Dropbox Sign event names it, polling only as the
        fallback.
    """

    poll_interval: float
    timeout: float
    recancel_after: float
    max_cancel_attempts: int
    on_completed: str
    event_first: bool

    @classmethod
    def checked(
        cls,
        poke_interval: Duration,
        timeout: Duration,
        recancel_after: Duration,
        max_cancel_attempts: int,
        on_completed: str,
        event_first: bool,
    ) -> WaitSettings:
        """
        The settings of a task's wait, refusing any that cannot work when the DAG file is parsed.

        :raises ValueError: naming the value, as :func:`check_wait_settings` and
            :func:`check_on_completed` do, or an ``event_first`` that is not a boolean.
        """
        seconds = check_wait_settings(poke_interval, timeout, recancel_after, max_cancel_attempts)
        check_on_completed(on_completed)
        if not isinstance(event_first, bool):
            raise ValueError(f"event_first {event_first!r} must be True or False")
        return cls(
            seconds.poke_interval,
            seconds.timeout,
            seconds.recancel_after,
            max_cancel_attempts,
            on_completed,
            event_first,
        )


def _seconds(name: str, value: Any) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{name} {value!r} must be a positive number of seconds or a timedelta")
    return float(seconds)


def check_on_completed(on_completed: Any) -> None:
    """:raises ValueError: when ``on_completed`` is not ``fail`` or ``ignore``."""
    if on_completed not in ON_COMPLETED_CHOICES:
        raise ValueError(f"on_completed {on_completed!r} must be one of {', '.join(ON_COMPLETED_CHOICES)}")


def configured(settings: WaitSettings, *, poke_interval_given: bool, event_first_given: bool) -> WaitSettings:
    """
    A task's wait settings with the deployment's ``[dropbox_sign] poke_interval`` and
    ``event_first`` where the task did not set its own, read when the task runs.

    :param settings: the task's checked settings.
    :param poke_interval_given: the task set its own ``poke_interval``.
    :param event_first_given: the task set its own ``event_first``.
    :raises ValueError: naming the option and its value, when one is malformed.
    """
    from airflow.providers.common.compat.sdk import conf

    changes: dict[str, Any] = {}
    if not poke_interval_given:
        raw = conf.get(CONFIG_SECTION, "poke_interval", fallback=str(DEFAULT_POLL_INTERVAL))
        try:
            value: Any = float(str(raw).strip())
        except ValueError:
            value = raw
        changes["poll_interval"] = _seconds(f"[{CONFIG_SECTION}] poke_interval", value)
    if not event_first_given:
        raw = str(conf.get(CONFIG_SECTION, "event_first", fallback="False")).strip().lower()
        if raw not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"[{CONFIG_SECTION}] event_first must be True or False, not {raw!r}")
        changes["event_first"] = raw in ("true", "1", "yes", "on")
    return replace(settings, **changes) if changes else settings
