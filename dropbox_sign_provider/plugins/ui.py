"""
The Dropbox Sign page in Airflow's navigation: :class:`DropboxSignUIPlugin` mounts the page's app
(:mod:`dropbox_sign_provider.ui.app`) on the API server under :data:`URL_PREFIX` and declares it as
an external view, which Airflow 3.1 and later show in an iframe under *Dropbox Sign*.

Every process that loads Airflow's plugins imports this module (the scheduler and workers too):
it reads no connection, no ``[dropbox_sign]`` option and no database, and imports the page's app,
with Airflow's API security, only when the API server first serves the page.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from starlette.types import Receive, Scope, Send

#: Where the plugin mounts the page's app on the API server.
URL_PREFIX = "/dropbox-sign-ui"
#: The page's route in Airflow's UI (``<airflow>/plugin/dropbox-sign``).
URL_ROUTE = "dropbox-sign"


class _PageApp:
    """An ASGI app that imports the page's FastAPI app when it is first called."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from dropbox_sign_provider.ui.app import app

        await app(scope, receive, send)


def _href() -> str:
    # The iframe's address: below [api] base_url's path, as Airflow's REST API and UI are. Airflow's
    # own option, read from the configuration file or environment only, never from a database.
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}{URL_PREFIX}/"


class DropboxSignUIPlugin(AirflowPlugin):
    """Mounts the Dropbox Sign page under :data:`URL_PREFIX` and shows it in Airflow's navigation."""

    name = "dropbox_sign_ui"
    fastapi_apps = [{"app": _PageApp(), "url_prefix": URL_PREFIX, "name": "Dropbox Sign page"}]
    external_views = [
        {
            "name": "Dropbox Sign",
            "href": _href(),
            "url_route": URL_ROUTE,
            "destination": "nav",
            "category": "browse",
        }
    ]
