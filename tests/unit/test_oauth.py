"""The I/O-free core of OAuth refreshes: when a token is renewed, how answers read, what is retried."""

from __future__ import annotations

import json
import random

import pytest

from dropbox_sign_provider.exceptions import (
    DropboxSignConnectionError,
    DropboxSignOAuthClientError,
    DropboxSignOAuthError,
    DropboxSignRefreshTokenError,
    DropboxSignTokenHostError,
)
from dropbox_sign_provider.hooks.connection import OAuthApp
from dropbox_sign_provider.hooks.oauth import (
    REREADS,
    Refreshed,
    Retry,
    TokenKeeper,
    refresh_token_variable,
    renew_at,
)
from dropbox_sign_provider.hooks.policy import RetryPolicy

APP = OAuthApp("https://app.hellosign.com/oauth/token", "cid", "cs-SECRET", "rt-0")
POLICY = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)


def keeper() -> TokenKeeper:
    return TokenKeeper("ds_app", APP, POLICY)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def envelope(status: int, name: str) -> bytes:
    return body(error={"error_msg": "x", "error_name": name})


@pytest.mark.parametrize(
    ("expires_in", "renewed_after"),
    [(3600, 3540), (60, 54), (10, 9)],
    ids=["an hour: 60 s early", "a minute: a tenth early", "seconds: a tenth early"],
)
def test_a_token_is_renewed_before_it_expires(expires_in: float, renewed_after: float) -> None:
    assert renew_at(1000.0, expires_in) == pytest.approx(1000.0 + renewed_after)


def test_a_refresh_sends_the_documented_fields_and_keeps_the_answer() -> None:
    tokens = keeper()
    attempt = tokens.start(None, random.Random(0))
    assert attempt.url == "https://app.hellosign.com/oauth/token?refresh"
    assert attempt.fields == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-0",
        "client_id": "cid",
        "client_secret": "cs-SECRET",
    }
    step = attempt.answered(200, body(access_token="at-1", expires_in=60, refresh_token="rt-1"), 1000.0)
    assert isinstance(step, Refreshed)
    assert step.rotated == "rt-1"
    assert tokens.usable(1053.9) == "at-1"
    assert tokens.usable(1054.0) is None
    # The Variable wins over what this process holds; then what it rotated to; then the connection's.
    assert tokens.start("rt-var", random.Random(0)).refresh_token == "rt-var"
    assert tokens.start(None, random.Random(0)).refresh_token == "rt-1"


def test_the_same_refresh_token_answered_is_no_rotation() -> None:
    step = (
        keeper()
        .start(None, random.Random(0))
        .answered(200, body(access_token="at-1", expires_in=60, refresh_token="rt-0"), 0.0)
    )
    assert isinstance(step, Refreshed)
    assert step.rotated is None


def test_a_401_rejects_only_the_token_it_was_sent_with() -> None:
    tokens = keeper()
    tokens.start(None, random.Random(0)).answered(200, body(access_token="at-1", expires_in=60), 0.0)
    tokens.rejected("at-old")
    assert tokens.usable(1.0) == "at-1"
    tokens.rejected("at-1")
    assert tokens.usable(1.0) is None


@pytest.mark.parametrize(
    "answer",
    [body(error="invalid_grant", error_description="revoked"), envelope(400, "invalid_grant")],
    ids=["RFC 6749", "Dropbox Sign's envelope"],
)
def test_invalid_grant_reads_the_variable_again_then_fails_and_is_remembered(answer: bytes) -> None:
    tokens = keeper()
    attempt = tokens.start(None, random.Random(0))
    step = attempt.answered(400, answer, 0.0)
    assert step == Retry(delay=1.0, reread=True)
    # Nothing newer yet: read again, each wait longer, a few times.
    waits = [attempt.newer(None) for _ in range(REREADS)]
    assert [wait.delay for wait in waits if wait is not None] == [2.0, 4.0, 8.0]
    with pytest.raises(DropboxSignRefreshTokenError) as refused:
        attempt.newer("rt-0")
    message = str(refused.value)
    assert "'ds_app'" in message
    assert "authorize the app again" in message
    assert refresh_token_variable("ds_app") in message
    assert "rt-0" not in message
    assert "cs-SECRET" not in message
    # The next call fails at once with the same refresh token; a newer one in the Variable is tried.
    with pytest.raises(DropboxSignRefreshTokenError):
        tokens.start(None, random.Random(0))
    assert tokens.start("rt-newer", random.Random(0)).refresh_token == "rt-newer"


def test_invalid_grant_then_a_newer_token_in_the_variable_is_sent() -> None:
    attempt = keeper().start(None, random.Random(0))
    assert attempt.answered(400, envelope(400, "invalid_grant"), 0.0) == Retry(delay=1.0, reread=True)
    assert attempt.newer("rt-9") is None
    assert attempt.fields["refresh_token"] == "rt-9"
    # A second refusal, of the newer token too, is final.
    with pytest.raises(DropboxSignRefreshTokenError):
        attempt.answered(400, envelope(400, "invalid_grant"), 0.0)


@pytest.mark.parametrize("status", [400, 401])
def test_a_wrong_client_secret_names_the_connection_and_is_not_retried(status: int) -> None:
    attempt = keeper().start(None, random.Random(0))
    with pytest.raises(DropboxSignOAuthClientError, match=r"'ds_app'.*client_secret") as refused:
        attempt.answered(status, envelope(status, "invalid_client"), 0.0)
    assert not refused.value.retryable
    assert "cs-SECRET" not in repr(refused.value)


def test_5xx_and_no_answer_are_retried_then_the_token_host_is_named() -> None:
    attempt = keeper().start(None, random.Random(0))
    first = attempt.answered(503, b"<html>busy</html>", 0.0)
    assert isinstance(first, Retry)
    assert not first.reread
    assert 0 < first.delay <= 0.02
    lost = DropboxSignConnectionError(None, "connection_error", "refused", method="POST", path="/oauth/token")
    assert isinstance(attempt.failed(lost), Retry)
    with pytest.raises(DropboxSignTokenHostError, match=r"'ds_app'.*app\.hellosign\.com.*oauth_refresh_url"):
        attempt.failed(lost)


@pytest.mark.parametrize(
    "answer",
    [b"not json", body(access_token="", expires_in=60), body(access_token="at", expires_in=0), body()],
)
def test_an_answer_without_a_token_is_an_error(answer: bytes) -> None:
    with pytest.raises(DropboxSignOAuthError, match="no access_token and expires_in"):
        keeper().start(None, random.Random(0)).answered(200, answer, 0.0)


def test_other_refusals_are_oauth_errors_naming_the_connection() -> None:
    with pytest.raises(DropboxSignOAuthError, match=r"'ds_app'.*refused the refresh") as refused:
        keeper().start(None, random.Random(0)).answered(403, envelope(403, "forbidden"), 0.0)
    assert type(refused.value) is DropboxSignOAuthError
