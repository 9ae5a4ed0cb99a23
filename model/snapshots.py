"""Encoder snapshots across training, for the convergence analysis (model/analysis.py).

A snapshot is the encoder (`stages`, BatchNorm statistics included) in float16 and nothing
else: no aux heads, decoder, optimizer or history (a ResNet-18 encoder is 22 MB). The
training loop calls `save_snapshot` at the end of an epoch; each lands in
`RUN/snapshots/epoch-NNNN.pt`, named by its global epoch (1-based over all phases in order;
0 is the initialisation, before any training).

What a snapshot's epoch means for each module is in `stage_status`: in a greedy run, module k
is "init" (its weights are still the random initialisation) until its own phase, "training"
during it and "frozen" after; in end-to-end SGD every module is "training" in every epoch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from model.checkpoint import ModelFileError, load_fault, load_file, save_atomic
from model.greedy import AUX_WARMUP_PHASE, HEADS_PHASE
from model.network import NetConfig, SignNet
from model.splits import resolve_split

SNAPSHOT_FORMAT = "greedysign-snapshot/1"
SNAPSHOT_DIR = "snapshots"
_MODULE_PHASE = re.compile(r"module(\d+)")


def snapshot_path(run_dir: Path | str, global_epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"epoch-{global_epoch:04d}.pt"


def stage_status(phase_name: str, num_stages: int) -> list[str]:
    """Each encoder module's state at the end of an epoch of `phase_name`.

    "moduleM" (greedy, M 1-based): modules before M are frozen, M is training, later ones are
    still at their initialisation. "heads" (greedy decoder phase) and "aux-heads" (a fine-tune's
    warm-up of its aux heads): all frozen. "sgd" and "modules": all training. "init" (before any
    training): all at init.
    """
    if phase_name == "init":
        return ["init"] * num_stages
    if phase_name in (HEADS_PHASE, AUX_WARMUP_PHASE):
        return ["frozen"] * num_stages
    if match := _MODULE_PHASE.fullmatch(phase_name):
        current = int(match.group(1)) - 1
        return [
            "frozen" if k < current else "training" if k == current else "init"
            for k in range(num_stages)
        ]
    return ["training"] * num_stages


def save_snapshot(
    model: nn.Module, run_dir: Path | str, phase_name: str, epoch: int, global_epoch: int
) -> Path:
    """Write the encoder of `model` (a SignNet, or DDP around one) to
    `run_dir/snapshots/epoch-{global_epoch:04d}.pt`, float16, atomically; returns the path.

    `epoch` is the epoch within `phase_name` (1-based), `global_epoch` the count over all
    phases so far (1-based; 0 for the initial weights, with phase_name "init").
    """
    net: SignNet = getattr(model, "module", model)  # unwrap DistributedDataParallel
    encoder = {
        name: value.detach().cpu().half() if value.is_floating_point() else value.detach().cpu()
        for name, value in net.stages.state_dict().items()
    }
    return save_atomic(
        {
            "format": SNAPSHOT_FORMAT,
            "config": asdict(net.config),
            "phase": phase_name,
            "epoch": int(epoch),
            "global_epoch": int(global_epoch),
            "stage_status": stage_status(phase_name, net.num_stages),
            "encoder": encoder,
        },
        snapshot_path(run_dir, global_epoch),
    )


def snapshot_callback(every: int, run_dir: Path | str) -> Callable[[Any, Any, int, int], None]:
    """An end-of-epoch callback (model, phase, epoch within the phase, epochs done in all)
    for model/train.py that saves a snapshot every `every` epochs (counted over all phases)
    and at the end of each phase. Greedy's "heads" phase and a fine-tune's "aux-heads" phase
    train no encoder weight, so they save none: the encoder is that of the snapshot before."""
    if every < 1:
        raise ValueError(f"snapshots every {every} epochs: give a positive number")

    def on_epoch_end(model: nn.Module, phase: Any, epoch: int, epochs_done: int) -> None:
        if phase.name in (HEADS_PHASE, AUX_WARMUP_PHASE):
            return
        if epochs_done % every == 0 or epoch == getattr(phase, "epochs", None):
            save_snapshot(model, run_dir, phase.name, epoch, epochs_done)

    return on_epoch_end


@dataclass
class Snapshot:
    path: Path
    config: NetConfig
    phase: str
    epoch: int
    global_epoch: int
    stage_status: list[str]
    encoder: dict[str, Tensor]

    @property
    def stage_units(self) -> list[list[str]]:
        return resolve_split(self.config.arch, self.config.split)

    def describe(self) -> dict[str, Any]:
        """What a report says about the snapshot (no weights)."""
        return {
            "file": self.path.name,
            "phase": self.phase,
            "epoch": self.epoch,
            "global_epoch": self.global_epoch,
            "stage_status": self.stage_status,
        }


def load_snapshot(path: Path | str) -> Snapshot:
    """The snapshot in `path`. A missing file raises FileNotFoundError; any other file that is
    not a snapshot this version can read (a damaged one, say), ModelFileError naming it."""
    try:
        return _read_snapshot(path)
    except (FileNotFoundError, ModelFileError):
        raise
    except Exception as error:
        # As for a model file (model/checkpoint.py): torch.load of a damaged file and a foreign
        # dict fail in many ways (UnpicklingError, EOFError, KeyError, ...), one fault to a user.
        raise ModelFileError(
            f"{path}: not a GreedySign encoder snapshot this version can read ({load_fault(error)})"
        ) from error


def _read_snapshot(path: Path | str) -> Snapshot:
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise ModelFileError(f"{path}: not a GreedySign encoder snapshot (no format mark)")
    return Snapshot(
        path=Path(path),
        config=NetConfig(**state["config"]),
        phase=state["phase"],
        epoch=state["epoch"],
        global_epoch=state["global_epoch"],
        stage_status=list(state["stage_status"]),
        encoder=state["encoder"],
    )


def list_snapshots(run_dir: Path | str) -> list[Path]:
    """The snapshot files of a run, in training order (by global epoch)."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    paths = [path for path in folder.glob("epoch-*.pt") if path.stem[6:].isdigit()]
    return sorted(paths, key=lambda path: int(path.stem[6:]))


def snapshot_model(
    snapshot: Snapshot, model: SignNet | None = None, device: str | object = "cpu"
) -> SignNet:
    """A SignNet (no aux heads) whose encoder holds the snapshot's weights in float32, in eval
    mode. Only `stages` are meaningful: the heads keep their random initialisation. Pass
    `model` (a SignNet of the same config) to load into it rather than build a new one."""
    if model is None:
        model = SignNet(snapshot.config, with_aux=False)
    elif (model.config.arch, model.stage_units) != (snapshot.config.arch, snapshot.stage_units):
        raise ValueError(
            f"{snapshot.path} holds a {snapshot.config.arch} encoder split "
            f"{snapshot.config.split!r}, not the {model.config.arch} {model.config.split!r} "
            "one it was to be loaded into"
        )
    model.stages.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in snapshot.encoder.items()},
        strict=True,
    )
    return model.to(device).eval()
