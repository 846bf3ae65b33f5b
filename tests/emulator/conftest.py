"""Fixtures of the emulator's own tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.emulator.receiver import Receiver


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """Starts callback receivers on loopback, each stopped after the test: ``make_receiver(replies)``."""
    with ExitStack() as stack:
        yield lambda replies=None: stack.enter_context(Receiver(replies))


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    """A callback receiver that acknowledges every event."""
    return make_receiver()
