"""Where models live: run folders, the newest run, and the shipped model.

A run folder (`runs/NAME/`) holds `checkpoint.pth` (resumable training state), `model.pt`
(the exported model), `metrics.json`, `history.csv` and plots. `runs/LATEST` names the newest
finished run; eval, predict and the service use it when no model is given, else the model
shipped with the package.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pth"
LATEST_FILE = "LATEST"
SHIPPED_MODEL = Path(__file__).resolve().parent / "shipped" / "greedysign-ctsrd-resnet18.pt"
# End-to-end SGD on the same data and split: the reference the Greedy-DIB model is held to.
SHIPPED_SGD_MODEL = SHIPPED_MODEL.with_name("greedysign-ctsrd-resnet18-sgd.pt")


def folder_fault(folder: Path) -> str | None:
    """Why `folder` cannot be made (or written in, when it is there), or None; without making
    it, so that a command checks its output folder before its work and leaves nothing behind
    when it stops before writing. Permissions as access() sees them: a write may still fail
    (a full disk), and is reported then."""
    # lexists: a link is where the walk stops, whether or not it leads anywhere; and it says
    # False, not raises, where a folder on the way may not be looked into.
    there = next(path for path in (folder, *folder.parents) if os.path.lexists(path))
    if not there.exists():
        return f"{there} is a link that leads nowhere"
    if not there.is_dir():
        return f"{there} is a file, not a folder"
    if not os.access(there, os.W_OK | os.X_OK):
        return f"cannot write in {there}"
    return None


def runs_root() -> Path:
    return Path(os.environ.get("GREEDYSIGN_RUNS", "runs"))


def mark_latest(run_dir: Path) -> None:
    """Record `run_dir` as the newest finished run (atomically: a reader never sees half),
    when it lies where runs are looked for (`runs_root()`); a run written elsewhere is only
    used when named, and no LATEST file is left beside it."""
    if run_dir.resolve().parent != runs_root().resolve():
        return
    latest = run_dir.parent / LATEST_FILE
    temporary = latest.with_name(f".{LATEST_FILE}.tmp")
    temporary.write_text(run_dir.name + "\n")
    os.replace(temporary, latest)


def latest_run(root: Path | None = None) -> Path | None:
    latest = (root or runs_root()) / LATEST_FILE
    if not latest.is_file():
        return None
    run_dir = latest.parent / latest.read_text().strip()
    return run_dir if (run_dir / MODEL_FILE).is_file() else None


def unfinished_run(run_dir: Path) -> str:
    """What to say of a run folder with a checkpoint and no model yet: training stopped."""
    return (
        f"{run_dir}: the run has not finished (no {MODEL_FILE} yet; its {CHECKPOINT_FILE} "
        f"holds the last epoch done): finish it with `greedysign train --out {run_dir} "
        "--resume` and the arguments it was started with"
    )


def resolve_model(model: str | Path | None = None) -> Path:
    """The model file to use: `model` (a model file or a run folder) when given, else the
    newest run, else the shipped model."""
    if model is not None:
        path = Path(model)
        if path.is_dir():
            if not (path / MODEL_FILE).is_file() and (path / CHECKPOINT_FILE).is_file():
                raise FileNotFoundError(unfinished_run(path))
            path = path / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no model at {model} (give a model file or a run folder)")
        return path
    run_dir = latest_run()
    if run_dir is not None:
        return run_dir / MODEL_FILE
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL
    raise FileNotFoundError(
        f"no trained run in {runs_root()}/ and no shipped model at {SHIPPED_MODEL}; "
        "train one with `make train`"
    )
