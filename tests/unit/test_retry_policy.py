"""
The retry policy on its own: which answers are retried, how long each retry waits (jittered
back-off, a 429's announced reset, a headerless 429 outlasted), and the policy's own checks.
Nothing is sent. The rate limit's budget is in test_rate_limit.py.
"""

from __future__ import annotations

import random
import statistics

import pytest

from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignConnectionError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignResponseError,
    DropboxSignServerError,
)
from dropbox_sign_provider.hooks.policy import RetryPolicy
from tests.helpers import answer_error


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_rate_limits_and_server_errors_are_retried(status: int) -> None:
    error = answer_error(status)
    assert RetryPolicy.is_retryable(error)
    assert RetryPolicy().retry_delay(0, error, random.Random(1)) is not None


@pytest.mark.parametrize(
    "error",
    [
        DropboxSignConnectionError(None, "connection_error", "ConnectionResetError", method="GET", path="/p"),
        DropboxSignResponseError(200, "invalid_response", "expected a JSON object", method="GET", path="/p"),
    ],
    ids=["no-answer", "unreadable-answer"],
)
def test_missing_and_unreadable_answers_are_retried(error: DropboxSignError) -> None:
    assert RetryPolicy.is_retryable(error)
    assert RetryPolicy().retry_delay(0, error, random.Random(1)) is not None


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 410, 418, 422])
def test_other_client_errors_are_never_retried(status: int) -> None:
    error = answer_error(status)
    assert not RetryPolicy.is_retryable(error)
    assert RetryPolicy(max_retries=100).retry_delay(0, error, random.Random(1)) is None


def test_backoff_grows_and_stays_within_its_jittered_bounds() -> None:
    policy = RetryPolicy(max_retries=10, backoff_base=0.5, backoff_max=6.0)
    rng = random.Random(42)
    error = answer_error(503)
    means = []
    for retries_done in range(6):
        ceiling = min(6.0, 0.5 * 2**retries_done)
        delays = [policy.retry_delay(retries_done, error, rng) for _ in range(200)]
        assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
        # Jittered: clients that failed together spread out instead of retrying together.
        assert len({round(d or 0, 6) for d in delays}) > 150
        assert max(d or 0 for d in delays) - min(d or 0 for d in delays) > ceiling / 4
        means.append(statistics.fmean(d or 0 for d in delays))
    assert means[0] < means[1] < means[2] < means[3] < means[4]
    assert means[4] == pytest.approx(means[5], rel=0.15)  # both capped at backoff_max


def test_a_429_that_announced_its_reset_leaves_the_wait_to_the_budget() -> None:
    policy = RetryPolicy(backoff_base=5.0, backoff_max=60.0)
    rng = random.Random(7)
    with_reset = [policy.retry_delay(3, answer_error(429, retry_after=30.0), rng) for _ in range(50)]
    # Only a small spread: the shared budget, which saw the same reset, holds the send until then.
    assert all(d is not None and 0 <= d <= 0.1 for d in with_reset)
    without_reset = policy.retry_delay(3, answer_error(429), rng)
    assert without_reset is not None
    assert 20 <= without_reset <= 40


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_max_retries_is_respected(max_retries: int) -> None:
    policy = RetryPolicy(max_retries=max_retries)
    rng = random.Random(0)
    error = answer_error(500)
    delays = [policy.retry_delay(done, error, rng) for done in range(max_retries + 2)]
    assert [d is not None for d in delays] == [True] * max_retries + [False, False]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_retries": -1}, "max_retries -1"),
        ({"backoff_base": 0}, "backoff_base 0"),
        ({"backoff_base": 2.0, "backoff_max": 1.0}, "backoff_max 1.0"),
        ({"max_rate_limit_wait": -1}, "max_rate_limit_wait -1"),
    ],
)
def test_an_impossible_policy_is_refused(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_policy_is_a_value() -> None:
    assert RetryPolicy(max_retries=2) == RetryPolicy(max_retries=2)
    assert RetryPolicy(max_retries=2) != RetryPolicy(max_retries=3)
    with pytest.raises(AttributeError):
        RetryPolicy().max_retries = 1  # type: ignore[misc]


def test_bad_request_is_not_mistaken_for_a_server_error() -> None:
    error = answer_error(400)
    assert isinstance(error, DropboxSignBadRequestError)
    assert not isinstance(error, DropboxSignServerError)


def test_a_429_without_any_header_is_outlasted_for_at_least_one_window() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    error = DropboxSignRateLimitError(429, "exceeded_rate", "Too many requests.")
    waited, retries = 0.0, 0
    while (delay := policy.retry_delay(retries, error, rng, rate_limited_for=waited)) is not None:
        waited += delay
        retries += 1
    assert retries == policy.max_retries
    assert waited >= 60


def test_the_limits_of_a_possible_policy_are_allowed_and_an_impossible_one_says_the_rule() -> None:
    assert RetryPolicy(backoff_base=2.0, backoff_max=2.0, max_rate_limit_wait=0).max_rate_limit_wait == 0
    assert RetryPolicy(max_rate_limit_wait=0.5).max_rate_limit_wait == 0.5
    with pytest.raises(ValueError, match="must satisfy") as refused:
        RetryPolicy(backoff_base=2.0, backoff_max=1.0)
    assert str(refused.value) == (
        "backoff_base 2.0 and backoff_max 1.0 must satisfy 0 < backoff_base <= backoff_max"
    )


def test_a_headerless_429_spreads_the_retries_left_over_what_remains_of_the_window() -> None:
    policy = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_max=0.01)
    rng = random.Random(3)
    error = DropboxSignRateLimitError(429, "exceeded_rate", "Too many requests.")
    # A first 429: the whole window over the five retries left.
    first = policy.retry_delay(0, error, rng)
    assert first is not None
    assert 12.0 <= first <= 12.1
    # Half a window later, half of it over the same retries.
    half = policy.retry_delay(0, error, rng, rate_limited_for=30.0)
    assert half is not None
    assert 6.0 <= half <= 6.1
    # A whole window of 429s: only the backoff and the jitter are left.
    late = policy.retry_delay(4, error, rng, rate_limited_for=60.0)
    assert late is not None
    assert late <= 0.1


def test_a_reset_at_the_clock_margin_counts_as_past() -> None:
    # A reset no later than the margin gives the budget nothing to hold the send back for.
    policy = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_max=0.01)
    delay = policy.retry_delay(0, answer_error(429, retry_after=0.05), random.Random(3))
    assert delay is not None
    assert delay >= 12.0
