"""The command line, ``dropbox-sign-emulator``: its options, and an emulator serving in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import inspect
from collections.abc import Sequence

from dropbox_sign_provider.testing.emulator.access import ADMIN_TOKEN_HEADER
from dropbox_sign_provider.testing.emulator.callbacks import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_DELAY
from dropbox_sign_provider.testing.emulator.core import DropboxSignEmulator
from dropbox_sign_provider.testing.emulator.oauth import DEFAULT_TOKEN_LIFETIME


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the emulator in the foreground until SIGINT or SIGTERM (console script ``dropbox-sign-emulator``).

    :param argv: command-line arguments, ``sys.argv[1:]`` when ``None``.
    :return: the exit status, 0 after a clean shutdown.
    """
    parser = argparse.ArgumentParser(
        prog="dropbox-sign-emulator", description="A local emulator of the Dropbox Sign API, for tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind, 0 = any free one (default 8000)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accepted API key (repeatable; default test-key, required with --allow-remote)",
    )
    parser.add_argument(
        "--access-token",
        action="append",
        dest="access_tokens",
        help="accepted OAuth token (repeatable; default test-token, none with --allow-remote)",
    )
    parser.add_argument("--rate-limit", type=int, default=100, help="requests per window (default 100)")
    parser.add_argument(
        "--high-tier-rate-limit",
        type=int,
        default=25,
        help="signature_request/send calls per window, counted apart (default 25)",
    )
    parser.add_argument("--window-seconds", type=float, default=60.0, help="rate-limit window (default 60)")
    parser.add_argument(
        "--cancel-delay", type=float, default=2.0, help="seconds until a cancellation completes (default 2)"
    )
    parser.add_argument(
        "--callback-url",
        help="where events are POSTed (also set by PUT /v3/account with callback_url); localhost or a "
        "loopback address unless --allow-remote-callbacks",
    )
    parser.add_argument(
        "--allow-remote-callbacks",
        action="store_true",
        help="deliver events to callback URLs beyond loopback; without it, callers of PUT /v3/account "
        "could make the emulator send requests to any host it can reach",
    )
    parser.add_argument(
        "--callback-retry-delay",
        type=float,
        default=DEFAULT_RETRY_DELAY,
        help=f"seconds before an event's first retry, doubling (default {DEFAULT_RETRY_DELAY})",
    )
    parser.add_argument(
        "--callback-max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help=f"attempts per event delivery (default {DEFAULT_MAX_ATTEMPTS})",
    )
    parser.add_argument("--duplicate-events", action="store_true", help="deliver each event twice")
    parser.add_argument(
        "--out-of-order-events", action="store_true", help="deliver events sent close together newest first"
    )
    parser.add_argument(
        "--late-events", type=float, default=0.0, metavar="SECONDS", help="hold each event before sending it"
    )
    parser.add_argument(
        "--forged-events", action="store_true", help="sign events with a wrong key (event_hash fails)"
    )
    parser.add_argument(
        "--oauth-app",
        action="append",
        default=[],
        metavar="CLIENT_ID:CLIENT_SECRET",
        help="register an OAuth API app (repeatable); POST /_emulator/oauth/grants with its client_id "
        "grants a refresh token, refreshed at POST /oauth/token?refresh on this server",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=DEFAULT_TOKEN_LIFETIME,
        metavar="SECONDS",
        help=f"seconds an OAuth access token lives (default {DEFAULT_TOKEN_LIFETIME:.0f})",
    )
    parser.add_argument(
        "--rotate-refresh-tokens", action="store_true", help="answer a new refresh token at each refresh"
    )
    parser.add_argument(
        "--refuse-superseded-refresh-tokens",
        action="store_true",
        help="with rotation, refuse a replaced refresh token (invalid_grant) instead of honouring it",
    )
    parser.add_argument("--port-file", help="write the bound port to this file once serving")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not a loopback address; requires --api-key (the default test-key "
        f"is refused), and the admin API then requires a token in the {ADMIN_TOKEN_HEADER} header "
        "(generated unless --admin-token is given; written to PORT_FILE.admin-token with --port-file, "
        "else printed once to stderr)",
    )
    parser.add_argument(
        "--admin-token",
        help="the admin API token to require (other local users can read it in the process list: "
        "prefer the generated one)",
    )
    args = parser.parse_args(argv)
    try:
        # Every option named after a parameter of the emulator goes to it as parsed. --api-key and
        # --access-token are None when not given: the emulator picks the defaults, or refuses them
        # with --allow-remote.
        accepted = inspect.signature(DropboxSignEmulator).parameters
        apps = dict(app.partition(":")[::2] for app in args.oauth_app)
        if any(not client_id or not secret for client_id, secret in apps.items()):
            raise ValueError("--oauth-app takes CLIENT_ID:CLIENT_SECRET, both non-empty")
        emulator = DropboxSignEmulator(
            **{name: value for name, value in vars(args).items() if name in accepted},
            oauth_apps=apps,
            superseded_refresh_tokens_work=not args.refuse_superseded_refresh_tokens,
        )
        emulator.set_delivery_fault(
            duplicate=args.duplicate_events,
            out_of_order=args.out_of_order_events,
            late=args.late_events,
            forged=args.forged_events,
        )
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(emulator.serve_forever(args.port_file))
    return 0
