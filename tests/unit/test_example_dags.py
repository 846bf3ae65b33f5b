"""
The example DAGs on their own, without the API: the command that copies them into a DAGs folder
(``dropbox-sign-example-dags DEST``, which never replaces someone's edited copy without
``--force``), their parsing, their trigger forms, the clean-up's mode and pools and the text of its
approval form. Their runs are in tests/system, their code against the emulator in tests/integration.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import ParamValidationError

from dropbox_sign_provider.example_dags import EXAMPLE_DAGS, example_dags_folder, main
from tests.helpers import (
    CANCEL_DAG,
    CLEANUP_DAG,
    DAGS,
    EXAMPLE_DAG_IDS,
    REPO,
    load_dag_module,
    parse_dags_folder,
)

# --- dropbox-sign-example-dags: copying them into a DAGs folder -----------------------------------


def test_a_checkout_serves_the_repository_dags() -> None:
    # In an installed wheel they sit in the package; here only dags/ has them.
    assert example_dags_folder() == REPO / "dags"
    assert sorted(EXAMPLE_DAGS) == sorted(path.name for path in (REPO / "dags").glob("*.py"))


def test_copies_every_dag_into_a_new_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "airflow" / "dags"

    assert main([str(dest)]) == 0

    for name in EXAMPLE_DAGS:
        assert (dest / name).read_bytes() == (REPO / "dags" / name).read_bytes()
    assert capsys.readouterr().out.count("copied: ") == len(EXAMPLE_DAGS)


def test_running_it_again_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path)])
    capsys.readouterr()

    assert main([str(tmp_path)]) == 0

    assert capsys.readouterr().out.count("unchanged: ") == len(EXAMPLE_DAGS)


def test_refuses_to_replace_an_edited_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edited = tmp_path / "dropbox_sign_expiry_cleanup.py"
    edited.write_text("# my own clean-up\n")

    assert main([str(tmp_path)]) == 1

    assert edited.read_text() == "# my own clean-up\n"
    # Nothing else was copied either: never one new example beside an old one.
    assert sorted(path.name for path in tmp_path.iterdir()) == [edited.name]
    err = capsys.readouterr().err
    assert f"refused: {edited} differs from the example" in err
    assert "--force" in err


def test_force_replaces_an_edited_copy(tmp_path: Path) -> None:
    edited = tmp_path / "dropbox_sign_expiry_cleanup.py"
    edited.write_text("# my own clean-up\n")

    assert main([str(tmp_path), "--force"]) == 0

    assert edited.read_bytes() == (REPO / "dags" / edited.name).read_bytes()
    assert (tmp_path / "dropbox_sign_cancel_request.py").is_file()


def test_a_file_as_destination_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_folder = tmp_path / "dags"
    not_a_folder.write_text("")

    assert main([str(not_a_folder)]) == 1

    assert f"{not_a_folder} is not a folder" in capsys.readouterr().err


def test_python_dash_m_does_the_same(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dropbox_sign_provider.example_dags", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(EXAMPLE_DAGS)


# --- parsing --------------------------------------------------------------------------------------


def test_every_dag_file_parses() -> None:
    bag = parse_dags_folder()

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXAMPLE_DAG_IDS
    files = {Path(dag.fileloc).name for dag in bag.dags.values()}
    assert files == {path.name for path in DAGS.glob("*.py")}


# --- the trigger forms ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cancel_module() -> ModuleType:
    return load_dag_module(CANCEL_DAG)


@pytest.fixture(scope="module")
def cleanup_module() -> ModuleType:
    return load_dag_module(CLEANUP_DAG)


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param([], id="empty"),
        pytest.param(["abc"], id="too-short"),
        pytest.param(["D10338CAD145E1CB68AFC828"], id="upper-case"),
        pytest.param(["d10338cad145e1cb68afc828/../x"], id="path"),
        pytest.param(["d10338cad145e1cb68afc828", "d10338cad145e1cb68afc828"], id="duplicate"),
        pytest.param("d10338cad145e1cb68afc828", id="not-a-list"),
    ],
)
def test_the_form_refuses_bad_ids(cancel_module: ModuleType, ids: Any) -> None:
    params = copy.deepcopy(cancel_module.dag.params)

    with pytest.raises(ParamValidationError, match="signature_request_ids"):
        params["signature_request_ids"] = ids


def test_the_form_needs_ids_and_accepts_good_ones(cancel_module: ModuleType) -> None:
    params = copy.deepcopy(cancel_module.dag.params)
    with pytest.raises(ParamValidationError, match="signature_request_ids"):
        params.validate()

    ids = ["d10338cad145e1cb68afc828", "fa5c8a0b0f492d768749333ad6fcc214c111e967"]
    params["signature_request_ids"] = ids
    assert params.validate() == {
        "signature_request_ids": ids,
        "dropbox_sign_conn_id": "dropbox_sign_default",
        "require_approval": True,
        "wait_for_confirmation": True,
        "on_completed": "fail",
    }


def test_the_form_offers_only_the_connections_of_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__UI_CONN_IDS", " ds_sales , ds_legal,ds_sales ")
    module = load_dag_module(CANCEL_DAG)
    params = copy.deepcopy(module.dag.params)
    assert params["dropbox_sign_conn_id"] == "ds_sales"
    params["dropbox_sign_conn_id"] = "ds_legal"
    with pytest.raises(ParamValidationError, match="dropbox_sign_conn_id"):
        params["dropbox_sign_conn_id"] = "dropbox_sign_default"
    # Every task that talks to Dropbox Sign uses the chosen one.
    conn_ids = {
        task.task_id: task.dropbox_sign_conn_id
        for task in module.dag.tasks
        if hasattr(task, "dropbox_sign_conn_id")
    }
    assert conn_ids == dict.fromkeys(("preview", "approve", "cancel"), "{{ params.dropbox_sign_conn_id }}")
    assert all("dropbox_sign_conn_id" in module.dag.get_task(t).template_fields for t in conn_ids)


@pytest.mark.parametrize(
    ("name", "value"),
    [("on_completed", "sometimes"), ("wait_for_confirmation", "yes")],
)
def test_the_form_refuses_bad_options(cancel_module: ModuleType, name: str, value: Any) -> None:
    params = copy.deepcopy(cancel_module.dag.params)

    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_age_days", 0), ("max_age_days", "30"), ("max_cancellations", 0), ("dry_run", "no")],
)
def test_cleanup_params_refuse_bad_values(cleanup_module: ModuleType, name: str, value: Any) -> None:
    params = copy.deepcopy(cleanup_module.dag.params)

    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


# --- the clean-up's mode, pools and approval form -------------------------------------------------


def test_cleanup_needs_no_pool(cleanup_module: ModuleType) -> None:
    # A task in a pool that does not exist is never scheduled, and Airflow says so only in the
    # scheduler's log: the clean-up must run on a deployment that created no pool.
    assert {task.pool for task in cleanup_module.dag.tasks} == {"default_pool"}
    assert cleanup_module.dag.get_task("cancel").max_active_tis_per_dagrun == 4


def test_cleanup_runs_in_the_pool_the_deployment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__POOL", "dropbox_sign_api")

    dag = load_dag_module(CLEANUP_DAG).dag

    assert {task.task_id: task.pool for task in dag.tasks} == {
        "find": "dropbox_sign_api",
        "approve": "default_pool",
        "cancel": "dropbox_sign_api",
        "report": "default_pool",
    }


def test_no_example_dag_reads_the_environment() -> None:
    for path in DAGS.glob("*.py"):
        text = path.read_text()
        assert "os.environ" not in text, path.name
        assert "getenv" not in text, path.name
        assert "DROPBOX_SIGN_" not in text, path.name
