"""
``dropbox-sign-example-dags DEST``: it puts the example DAGs into a DAGs folder, and never replaces
someone's edited copy without ``--force``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dropbox_sign_provider.example_dags import EXAMPLE_DAGS, example_dags_folder, main
from tests.helpers import REPO


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
