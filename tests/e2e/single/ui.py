"""
What a new user does in the Airflow UI, driven in Debian's Chromium: add the Dropbox Sign
connection through the form, then trigger the cancellation DAG through its trigger form.

Selectors are roles, labels and visible text where the React app wires them up; where it does
not (the connection's extra fields and the DAG's params render their ``<label for>`` pointing at
another element than the input), the input's ``name`` (``element_<field>``) is the stable handle.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The app fetches and re-renders after every action; on a busy 2-core machine that can take a while.
TIMEOUT_MS = 60_000
# Airflow's own labels of the standard connection fields, for the ones a provider hides or renames.
STANDARD_LABELS = {
    "host": "Host",
    "login": "Login",
    "password": "Password",
    "port": "Port",
    "schema": "Schema",
}


class UIError(AssertionError):
    """The UI did not show what a user should see."""


@dataclass
class ConnectionForm:
    """What the provider declares about its connection form (from ``get_provider_info()``)."""

    hook_name: str
    connection_type: str
    hidden_fields: list[str]
    relabeling: dict[str, str]
    placeholders: dict[str, str]
    conn_fields: dict[str, dict[str, Any]]

    @classmethod
    def from_provider_info(cls, info: dict[str, Any], connection_type: str) -> ConnectionForm:
        for entry in info["connection-types"]:
            if entry["connection-type"] == connection_type:
                behaviour = entry.get("ui-field-behaviour", {})
                return cls(
                    hook_name=entry["hook-name"],
                    connection_type=connection_type,
                    hidden_fields=list(behaviour.get("hidden-fields", [])),
                    relabeling=dict(behaviour.get("relabeling", {})),
                    placeholders=dict(behaviour.get("placeholders", {})),
                    conn_fields=dict(entry.get("conn-fields", {})),
                )
        raise LookupError(f"the provider declares no connection type {connection_type!r}")


@dataclass
class UI:
    """
    One browser page on the deployment, numbering its screenshots in the order they are taken.

    :param playwright: the started Playwright.
    :param base_url: the Airflow UI, e.g. ``http://127.0.0.1:8080``.
    :param out_dir: where screenshots, page dumps and the trace go.
    """

    playwright: Playwright
    base_url: str
    out_dir: Path
    browser: Browser = field(init=False)
    context: BrowserContext = field(init=False)
    page: Page = field(init=False)
    shots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        self.context.tracing.start(screenshots=True, snapshots=True)
        self.page = self.context.new_page()

    def close(self, keep_trace: bool) -> None:
        """Close the browser; keep the Playwright trace (``trace.zip``) only when asked (failures)."""
        try:
            self.context.tracing.stop(path=self.out_dir / "trace.zip" if keep_trace else None)
        finally:
            self.browser.close()

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot ``NN-name.png``."""
        path = self.out_dir / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=path, full_page=True)
        self.shots.append(path)
        print(f"  screenshot {path}", flush=True)
        return path

    def dump(self, name: str) -> list[Path]:
        """Screenshot and HTML of the page as it is now (for failures: what did the user see?)."""
        html = self.out_dir / f"{name}.html"
        png = self.out_dir / f"{name}.png"
        html.write_text(self.page.content(), encoding="utf-8")
        self.page.screenshot(path=png, full_page=True)
        return [png, html]

    # -- step 1: the connection -----------------------------------------------------------------

    def add_connection(self, form: ConnectionForm, conn_id: str, host: str, api_key: str) -> None:
        """
        Admin > Connections > Add Connection: pick the provider's type, check that the form shows
        the provider's labels and fields (and hides the ones it hides), fill it in and save.
        """
        page = self.page
        page.goto(self.base_url + "/")
        page.get_by_role("button", name="Admin", exact=True).click()
        page.get_by_role("menuitem", name="Connections", exact=True).click()
        expect(page).to_have_url(re.compile(r"/connections$"))
        page.get_by_role("button", name="Add Connection").click()
        dialog = page.get_by_role("dialog").filter(has_text="Add Connection")
        expect(dialog).to_be_visible()

        dialog.get_by_label("Connection ID").fill(conn_id)
        dialog.get_by_role("combobox", name="Connection Type").fill(form.hook_name)
        page.get_by_role("option", name=form.hook_name, exact=True).click()

        # Standard fields: renamed ones show under the provider's label, hidden ones are absent.
        expect(dialog.get_by_role("button", name="Standard Fields")).to_be_visible()
        for name in form.hidden_fields:
            expect(dialog.locator(f'[name="{name}"]')).to_have_count(0)
        labels = self._labels(dialog)
        hidden_labels = {STANDARD_LABELS[name] for name in form.hidden_fields if name in STANDARD_LABELS}
        renamed_labels = {STANDARD_LABELS[name] for name in form.relabeling if name in STANDARD_LABELS}
        unexpected = labels & (hidden_labels | renamed_labels)
        if unexpected:
            raise UIError(
                f"the connection form still shows {sorted(unexpected)}; visible labels: {sorted(labels)}"
            )
        for name, label in form.relabeling.items():
            field_input = dialog.get_by_label(label, exact=True)
            expect(field_input).to_be_visible()
            expect(field_input).to_have_attribute("name", name)
        for name, placeholder in form.placeholders.items():
            expect(dialog.locator(f'[name="{name}"]')).to_have_attribute("placeholder", placeholder)
        expect(
            dialog.get_by_label(form.relabeling.get("password", "Password"), exact=True)
        ).to_have_attribute("type", "password")

        dialog.get_by_label(form.relabeling.get("host", "Host"), exact=True).fill(host)
        dialog.get_by_label(form.relabeling.get("password", "Password"), exact=True).fill(api_key)
        self.shot("connection-form-standard-fields")

        # Extra fields: one per conn-field, under the provider's label, with the schema's default and format.
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        for key, spec in form.conn_fields.items():
            field_input = dialog.locator(f'[name="element_{key}"]')
            expect(field_input).to_be_visible()
            group = dialog.get_by_role("group").filter(has=page.locator(f'[name="element_{key}"]'))
            expect(group.locator("label").first).to_have_text(
                re.compile(rf"^\s*{re.escape(spec['label'])}\s*\*?\s*$")
            )
            if spec.get("description"):
                expect(group).to_contain_text(spec["description"])
            schema = spec.get("schema", {})
            if schema.get("format") == "password":
                expect(field_input).to_have_attribute("type", "password")
            if "default" in schema:
                expect(field_input).to_have_value(str(schema["default"]))
        self.shot("connection-form-extra-fields")

        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.rstrip("/").endswith("/api/v2/connections")
        ) as created:
            dialog.get_by_role("button", name="Save").click()
        if created.value.status != 201:
            raise UIError(
                f"saving the connection answered {created.value.status}: {created.value.text()[:500]}"
            )
        expect(dialog).to_be_hidden()
        row = page.get_by_role("row").filter(has_text=conn_id)
        expect(row).to_be_visible()
        expect(row).to_contain_text(form.connection_type)
        self.shot("connection-saved")

    @staticmethod
    def _labels(scope: Locator) -> set[str]:
        """The visible field labels, without the required-field asterisk."""
        texts = scope.locator("label:visible").all_inner_texts()
        return {text.replace("*", "").strip() for text in texts if text.strip()}

    # -- step 2: trigger the DAG ----------------------------------------------------------------

    def open_dag(self, dag_id: str, display_name: str) -> None:
        """Dags > the DAG, as a user finds it from the home page (the app shows the display name)."""
        page = self.page
        page.goto(self.base_url + "/")
        page.get_by_role("link", name="Dags", exact=True).click()
        page.get_by_role("link", name=display_name, exact=True).first.click()
        expect(page).to_have_url(re.compile(rf"/dags/{re.escape(dag_id)}/?$"))
        expect(page.get_by_test_id("header-card").get_by_role("heading", name=display_name)).to_be_visible()
        self.shot("dag-page")

    def trigger(self, dag_id: str, param: str, invalid_value: str, valid_value: str) -> dict[str, Any]:
        """
        Open the trigger form, submit an invalid value for the list param ``param`` (and see the
        form refuse it), then a valid one.

        :return: the created DAG run, as the API answered the form's request.
        """
        page = self.page
        page.get_by_role("button", name="Trigger Dag", exact=True).click()
        dialog = page.get_by_role("dialog").filter(has_text=f"Trigger Dag - {dag_id}")
        expect(dialog).to_be_visible()
        ids_input = dialog.locator(f'[name="element_{param}"]')

        ids_input.fill(invalid_value)
        answer = self._submit_trigger(dialog, dag_id)
        if answer.status < 400 or answer.status >= 500:
            raise UIError(f"triggering with {invalid_value!r} answered {answer.status}, not a refusal")
        alert = dialog.get_by_test_id("error-alert")
        expect(alert).to_be_visible()
        expect(alert).to_contain_text(param)
        expect(alert).to_contain_text(invalid_value)
        expect(dialog).to_be_visible()
        self.shot("trigger-form-refuses-invalid-id")
        # The error toast sits over the dialog's Trigger button and stays while the pointer rests on
        # it: move away, as a user reading the error would, and let it go.
        dialog.get_by_role("heading").first.hover()
        expect(page.get_by_role("status").filter(has_text="Failed to Trigger")).to_have_count(0)

        return self._trigger_with(dialog, dag_id, ids_input, valid_value, "trigger-form-valid-id")

    def trigger_again(self, dag_id: str, param: str, value: str, shot: str) -> dict[str, Any]:
        """
        Trigger the open DAG once more with ``value`` for the list param ``param`` (one item per
        line), as a user would from the DAG's page.

        :return: the created DAG run, as the API answered the form's request.
        """
        page = self.page
        page.get_by_role("button", name="Trigger Dag", exact=True).click()
        dialog = page.get_by_role("dialog").filter(has_text=f"Trigger Dag - {dag_id}")
        expect(dialog).to_be_visible()
        return self._trigger_with(dialog, dag_id, dialog.locator(f'[name="element_{param}"]'), value, shot)

    def _trigger_with(
        self, dialog: Locator, dag_id: str, ids_input: Locator, value: str, shot: str
    ) -> dict[str, Any]:
        ids_input.fill(value)
        expect(ids_input).to_have_value(value)
        self.shot(shot)
        answer = self._submit_trigger(dialog, dag_id)
        if answer.status != 200:
            raise UIError(f"triggering with {value!r} answered {answer.status}: {answer.text()[:500]}")
        expect(dialog).to_be_hidden()
        run: dict[str, Any] = answer.json()
        return run

    def _submit_trigger(self, dialog: Locator, dag_id: str) -> Any:
        runs_path = f"/api/v2/dags/{dag_id}/dagRuns"
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and urllib.parse.urlsplit(r.url).path == runs_path
        ) as answer:
            dialog.get_by_role("button", name="Trigger", exact=True).click()
        return answer.value

    # -- step 3: the run ------------------------------------------------------------------------

    def answer_approval(
        self, dag_id: str, run_id: str, task_id: str, expected: list[str], option: str, shot: str
    ) -> dict[str, Any]:
        """
        Open the run's required action for ``task_id``, wait until the form shows every text of
        ``expected``, screenshot it, and press the button ``option``.

        :return: the API's answer to the form's ``PATCH .../hitlDetails``.
        """
        page = self.page
        page.goto(
            f"{self.base_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"
            f"/tasks/{task_id}/required_actions"
        )
        # The app may land on the task's default tab (its logs) instead: open the form's tab, as a
        # user would.
        page.get_by_text(re.compile(r"^Required Action")).first.click()
        for text in expected:
            expect(page.get_by_text(text, exact=False).first).to_be_visible(timeout=30_000)
        self.shot(shot)
        with page.expect_response(
            lambda r: (
                r.request.method == "PATCH" and urllib.parse.urlsplit(r.url).path.endswith("/hitlDetails")
            )
        ) as answer:
            page.get_by_role("button", name=option, exact=True).click()
        if answer.value.status != 200:
            raise UIError(f"pressing {option} answered {answer.value.status}: {answer.value.text()[:500]}")
        detail: dict[str, Any] = answer.value.json()
        return detail

    def open_run(self, dag_id: str, run_id: str) -> None:
        """The run's page (where the app lands after triggering), reloaded to show the current state."""
        url = f"{self.base_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"
        if self.page.url != url:
            self.page.goto(url)
        else:
            self.page.reload()

    def shows_task_state(self, task_id: str, state: str, timeout_ms: int = 5_000) -> bool:
        """Whether the run page's task table shows ``state`` for ``task_id`` (after a short wait)."""
        row = self.page.get_by_role("row").filter(has=self.page.get_by_role("link", name=task_id, exact=True))
        try:
            expect(row).to_contain_text(state, ignore_case=True, timeout=timeout_ms)
        except AssertionError:
            return False
        return True

    def expect_run_state(self, state: str) -> None:
        """The run's header badge shows ``state`` (the app refreshes running runs on its own)."""
        badge = self.page.get_by_test_id("header-card").get_by_test_id("state-badge").first
        expect(badge).to_have_text(re.compile(rf"^\s*{re.escape(state)}\s*$", re.IGNORECASE))
