"""
What the operator, the sensor and the trigger take as arguments, checked when they are built: bad
values refused with the value named, durations as seconds, the trigger's kwargs through Airflow's
serde. Nothing is sent: their runs against the emulator are in tests/integration.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest

from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from tests.compat import serde
from tests.helpers import make_trigger, operator

# --- the operator ---------------------------------------------------------------------------------


def test_invalid_literal_ids_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="'not-an-id' is not a Dropbox Sign id"):
        operator(["ab" * 20, "not-an-id"])


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"on_completed": "skip"}, "on_completed 'skip'"),
        ({"max_cancellations": -1}, "max_cancellations -1"),
        ({"poke_interval": 0}, "poke_interval 0"),
        ({"timeout": 0}, "timeout 0"),
        ({"timeout": -5}, "timeout -5"),
        ({"timeout": "5"}, "timeout '5'"),
        ({"timeout": False}, "timeout False"),
        ({"timeout": timedelta(0)}, "timeout datetime.timedelta\\(0\\)"),
        ({"recancel_after": timedelta(minutes=-5)}, "recancel_after datetime.timedelta\\(days=-1"),
        ({"poke_interval": "1 minute"}, "poke_interval '1 minute'"),
        ({"dry_run": "yes"}, "dry_run 'yes'"),
        ({"dry_run": 1}, "dry_run 1 "),
        ({"dry_run": None}, "dry_run None"),
        ({"dry_run": ""}, "dry_run ''"),
    ],
)
def test_bad_operator_parameters_are_named(kw: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        operator("ab" * 20, **kw)


def test_durations_as_timedelta_are_seconds() -> None:
    task = operator(
        "ab" * 20,
        poke_interval=timedelta(seconds=30),
        timeout=timedelta(hours=2),
        recancel_after=timedelta(minutes=45),
    )
    settings = task.wait_settings
    assert (settings.poll_interval, settings.timeout, settings.recancel_after) == (30.0, 7200.0, 2700.0)
    assert operator("ab" * 20, timeout=90).wait_settings.timeout == 90.0


# --- the sensor -----------------------------------------------------------------------------------


def test_reschedule_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"mode 'reschedule'.*use deferrable=True"):
        SignatureRequestCanceledSensor(
            task_id="confirm", signature_request_ids=["ab" * 20], mode="reschedule"
        )


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"poke_interval": -1}, "poke_interval -1"),
        ({"timeout": 0}, "timeout 0"),
        ({"timeout": -120}, "timeout -120"),
        ({"timeout": "120"}, "timeout '120'"),
        ({"timeout": True}, "timeout True"),
        ({"recancel_after": -1}, "recancel_after -1"),
        ({"recancel_plain_ids": "yes"}, "recancel_plain_ids 'yes'"),
        ({"on_completed": "skip"}, "on_completed 'skip'"),
        ({"max_cancel_attempts": 0}, "max_cancel_attempts 0"),
    ],
)
def test_bad_sensor_parameters_are_named(kw: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=["ab" * 20], **kw)


# --- the trigger ----------------------------------------------------------------------------------


def test_serde_round_trip() -> None:
    trigger = make_trigger(["ab" * 20], 1_700_000_000.5, timeout=60, on_completed="ignore")
    classpath, kwargs = trigger.serialize()
    # What the triggerer stores and reads back since Airflow 3.2.
    restored = serde.deserialize(json.loads(json.dumps(serde.serialize(kwargs))))
    assert restored == kwargs
    from airflow.sdk.module_loading import import_string

    rebuilt = import_string(classpath)(**restored)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_bad_on_completed_is_refused() -> None:
    with pytest.raises(ValueError, match="on_completed 'maybe'"):
        make_trigger(["ab" * 20], time.time(), on_completed="maybe")


@pytest.mark.parametrize(
    ("name", "value"),
    [("poll_interval", 0), ("poll_interval", -1.0), ("recancel_after", 0), ("max_cancel_attempts", 0)],
)
def test_a_trigger_with_a_bad_setting_is_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        make_trigger(["a" * 40], time.time(), **{name: value})
