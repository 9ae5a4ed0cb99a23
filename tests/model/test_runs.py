"""Which model a command uses when none is named: the newest finished run, else the shipped
one (model/runs.py). Serve, predict, eval and detect all start here."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.runs import (
    CHECKPOINT_FILE,
    LATEST_FILE,
    MODEL_FILE,
    SHIPPED_MODEL,
    mark_latest,
    resolve_model,
)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(root))
    return root


def finished_run(root, name):
    run = root / name
    run.mkdir()
    (run / MODEL_FILE).write_bytes(b"weights")
    return run


def test_without_runs_the_shipped_model(runs) -> None:
    assert resolve_model() == SHIPPED_MODEL


def test_the_newest_finished_run_comes_first(runs) -> None:
    mark_latest(finished_run(runs, "first"))
    mark_latest(finished_run(runs, "second"))
    assert resolve_model() == runs / "second" / MODEL_FILE
    assert (runs / LATEST_FILE).read_text() == "second\n"


def test_a_newest_run_whose_model_is_gone_falls_back_to_the_shipped_model(runs) -> None:
    run = finished_run(runs, "removed")
    mark_latest(run)
    (run / MODEL_FILE).unlink()
    assert resolve_model() == SHIPPED_MODEL


def test_a_run_written_outside_the_runs_folder_is_used_only_when_named(runs, tmp_path) -> None:
    elsewhere = finished_run(tmp_path, "elsewhere")
    mark_latest(elsewhere)
    assert not (tmp_path / LATEST_FILE).exists() and not (runs / LATEST_FILE).exists()
    assert resolve_model() == SHIPPED_MODEL
    assert resolve_model(elsewhere) == elsewhere / MODEL_FILE
    assert resolve_model(elsewhere / MODEL_FILE) == elsewhere / MODEL_FILE


def test_a_named_model_that_is_missing_or_unfinished_is_refused(runs) -> None:
    with pytest.raises(FileNotFoundError, match="no model at"):
        resolve_model(runs / "none")
    unfinished = runs / "unfinished"
    unfinished.mkdir()
    (unfinished / CHECKPOINT_FILE).write_bytes(b"state")
    with pytest.raises(FileNotFoundError, match="--resume"):
        resolve_model(unfinished)


def test_an_output_folder_is_checked_without_being_made(tmp_path, monkeypatch) -> None:
    from model.runs import folder_fault

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    (tmp_path / "nowhere").symlink_to(tmp_path / "missing")
    (tmp_path / "to-file").symlink_to(a_file)
    assert folder_fault(tmp_path / "new" / "deeper") is None
    assert folder_fault(a_file / "run") == f"{a_file} is a file, not a folder"
    assert (
        folder_fault(tmp_path / "to-file" / "run")
        == f"{tmp_path / 'to-file'} is a file, not a folder"
    )
    assert folder_fault(tmp_path / "nowhere" / "run") == (
        f"{tmp_path / 'nowhere'} is a link that leads nowhere"
    )
    monkeypatch.chdir(tmp_path)
    assert folder_fault(Path("relative") / "run") is None
    assert not (tmp_path / "new").exists() and not (tmp_path / "relative").exists()
