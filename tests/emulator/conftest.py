"""Fixtures of the emulator's own tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.emulator.receiver import Receiver


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """
    Starts callback receivers, each stopped after the test: ``make_receiver(replies, host=...)``, on
    loopback unless ``host`` says otherwise.
    """
    with ExitStack() as stack:
        yield lambda replies=None, host="127.0.0.1": stack.enter_context(Receiver(replies, host))


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    """A callback receiver that acknowledges every event."""
    return make_receiver()
