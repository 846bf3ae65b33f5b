"""
The receiver as Airflow finds it: the plugin through the package's entry point, its app mounted by
the API server's own code, the provider's configuration option and asset URI scheme.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT
from dropbox_sign_provider.plugins.callbacks import DropboxSignCallbacksPlugin, app
from tests.helpers import import_unread


def test_the_plugin_is_loaded_from_the_entry_point() -> None:
    from airflow import plugins_manager

    info = [p for p in plugins_manager.get_plugin_info() if p["name"] == DropboxSignCallbacksPlugin.name]
    assert len(info) == 1, [p["name"] for p in plugins_manager.get_plugin_info()]
    # Loaded once, from the package's airflow.plugins entry point (not a plugins folder).
    assert "airflow-provider-dropbox-sign" in str(info[0]["source"])
    assert "dropbox_sign_callbacks" in str(info[0]["source"])


def test_the_api_server_mounts_the_receiver_under_dropbox_sign(
    accounts: dict[str, str], make_callback: Callable[..., dict[str, Any]], recorded: Any
) -> None:
    from airflow.api_fastapi.app import init_plugins

    api_server = FastAPI()
    init_plugins(api_server)
    mounts = [r for r in api_server.routes if isinstance(r, Mount) and r.path == "/dropbox-sign"]
    assert [m.app for m in mounts] == [app]

    body = json.dumps(make_callback("callback_test", signature_request_id=None))
    with TestClient(api_server) as client:
        response = client.post("/dropbox-sign/callback", files={"json": (None, body)})
        assert response.status_code == 200
        assert response.text == CALLBACK_ACKNOWLEDGEMENT
        assert client.get("/dropbox-sign/callback").status_code == 405
    assert recorded.nothing()


def test_importing_the_plugin_reads_no_connection_option_or_database() -> None:
    # Every process that loads Airflow's plugins imports it (scheduler, workers), not only the
    # API server: in a fresh interpreter, nothing of the receiver's may run at import.
    loaded = import_unread(
        "dropbox_sign_provider.plugins.callbacks",
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(('airflow.models', "
        "'airflow.assets', 'airflow.utils.session', 'sqlalchemy'))))",
    )
    assert loaded == "[]"


def test_the_provider_declares_the_option_and_the_asset_scheme() -> None:
    import jsonschema

    from dropbox_sign_provider import get_provider_info

    info = get_provider_info()
    schema_path = __import__("airflow").__path__[0] + "/provider_info.schema.json"
    with open(schema_path) as schema:
        jsonschema.validate(info, json.load(schema))
    option = info["config"]["dropbox_sign"]["options"]["callback_conn_ids"]
    assert option["default"] == "dropbox_sign_default"
    assert option["type"] == "string"


def test_the_option_defaults_to_the_default_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager

    from dropbox_sign_provider.events.accounts import callback_conn_ids

    monkeypatch.delenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", raising=False)
    assert callback_conn_ids() == ["dropbox_sign_default"]
    # As Airflow's configuration reads it from the provider info (``airflow config list``).
    ProvidersManager().initialize_providers_configuration()
    conf.load_providers_configuration()
    assert conf.get("dropbox_sign", "callback_conn_ids") == "dropbox_sign_default"
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", " a , b,a,, ")
    assert callback_conn_ids() == ["a", "b"]


def test_assets_of_the_scheme_are_checked_by_the_provider_handler() -> None:
    from airflow.sdk import Asset

    with pytest.raises(ValueError, match="event type"):
        Asset("dropbox-sign://dropbox_sign_default/signature_request_exploded")
    assert Asset("dropbox-sign://ds/signature_request_canceled/").uri == (
        "dropbox-sign://ds/signature_request_canceled"
    )


def test_airflow_config_list_shows_every_option_of_the_section(tmp_path: Any) -> None:
    import os
    from pathlib import Path

    from dropbox_sign_provider import CONFIG_SECTION, get_provider_info

    options = get_provider_info()["config"][CONFIG_SECTION]["options"]
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW__DROPBOX_SIGN__")}
    command = [
        str(airflow),
        "config",
        "list",
        "--section",
        CONFIG_SECTION,
        "--include-descriptions",
        "--defaults",
    ]
    # Airflow 3.2 and later hide the values unless asked; 3.1 shows them and knows no such flag.
    done = subprocess.run([*command, "--show-values"], capture_output=True, text=True, env=env, timeout=120)
    if done.returncode == 2 and "--show-values" in done.stderr:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    for name, option in options.items():
        assert f"\n{name} = {option['default']}" in shown or f"\n# {name} = {option['default']}" in shown, (
            name
        )
        assert option["description"].split()[0] in shown, name
    assert {"armed", "poke_interval", "event_first", "pool", "approval_timeout"} <= set(options)
