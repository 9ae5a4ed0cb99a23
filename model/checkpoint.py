"""Checkpoints and exported models.

Two kinds of file, both one dict written atomically (temporary file, then `os.replace`):

- a training checkpoint (`checkpoint.pth` in a run folder): the whole model with its aux
  heads, the optimizer, scheduler and scaler of the phase in progress, and where training
  stands (phase, module k, epoch), so `--resume` continues exactly there;
- an exported model (`model.pt`): inference weights only (no aux heads, no optimizer) in
  float16, with what a user of the model needs to know about it (classes, image size, method,
  split, metrics, data fingerprint). It loads into `SignNet(config, with_aux=False)` strictly.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.network import AUX_PREFIXES, NetConfig, SignNet

MODEL_FORMAT = "greedysign-model/1"
CHECKPOINT_FORMAT = "greedysign-checkpoint/1"


def save_atomic(obj: dict[str, Any], path: Path | str) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a
    half-written checkpoint where the last good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        # mkstemp makes the file owner-only; a model is meant to be read by others (the
        # service's container user, for one).
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_file(path: Path | str) -> dict[str, Any]:
    """A checkpoint or model file, on the CPU. weights_only: these files hold plain data."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "torch": str(torch.__version__),
        "greedysign": version("greedysign"),
        "python": platform.python_version(),
    }


@dataclass
class ModelInfo:
    """What an exported model says about itself."""

    config: NetConfig
    class_names: list[str]
    dataset: str = "ctsrd"
    # "crops": reads one sign that fills the picture (classification and its mask);
    # "scenes": marks the sign pixels of whole road frames (its segmentation head is what
    # model/detect.py uses; its classifier is untrained).
    task: str = "crops"
    method: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    command: str = ""
    # {"threshold": t}: a known class below probability t is answered "unknown sign"
    # (model/open_set.py).
    open_set: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def open_set_trained(self, num_known: int) -> bool:
        """Whether its "unknown sign" and "no sign" outputs learned from examples. A model
        trained since the split counted them says so; one from before is taken to have, if it
        has the outputs (the shipped models were trained with TT100K's)."""
        has_outputs = len(self.class_names) > num_known
        return has_outputs and self.split.get("open_set_train_images", 1) > 0

    def to_dict(self) -> dict[str, Any]:
        info = asdict(self)
        info["config"] = asdict(self.config)
        return info


def export_model(model: SignNet, info: ModelInfo, path: Path | str) -> Path:
    """Write inference weights (no aux heads) in float16 with the model's metadata."""
    # On the CPU: a file written from a GPU run loads anywhere, whatever reads it.
    weights = {
        name: (value.half() if value.is_floating_point() else value).cpu()
        for name, value in model.inference_state_dict().items()
    }
    meta = info.to_dict()
    meta.pop("path")
    return save_atomic(
        {"format": MODEL_FORMAT, "model": weights, "versions": versions(), **meta}, path
    )


class ModelFileError(ValueError):
    """A file given as a model is not a readable GreedySign model; the message names the
    file and what is wrong with it, on one line."""


def require_sign_model(info: ModelInfo, path: Path | str) -> None:
    """Refuse a scene model where a sign model (one that reads a sign) is wanted: its class
    head was never trained, so whatever it read would be noise."""
    if info.task != "crops":
        raise ModelFileError(
            f"{path}: a {info.task!r} model, not a sign model: it marks the signs of whole "
            "frames (give it as --scene-model) and reads none"
        )


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[SignNet, ModelInfo]:
    """An exported model (`model.pt`) or a finished training checkpoint as an inference
    SignNet in eval mode, float32 on `device`, loaded with strict=True. A missing file
    raises FileNotFoundError; any other file that is not such a model, ModelFileError."""
    model, info, _ = _load(path)
    return model.to(device).eval(), info


def load_for_fine_tuning(path: Path | str) -> tuple[SignNet, ModelInfo, dict[str, torch.Tensor]]:
    """As `load_model` (on the CPU), with the aux heads' weights (float32) of a training
    checkpoint: none from an exported model, which does not keep them."""
    model, info, aux = _load(path)
    return model.eval(), info, aux


def _load(path: Path | str) -> tuple[SignNet, ModelInfo, dict[str, torch.Tensor]]:
    try:
        return _read_model(path)
    except (FileNotFoundError, ModelFileError):
        raise
    except Exception as error:
        # torch.load and a foreign dict fail in many ways (UnpicklingError, RuntimeError from
        # the zip reader, EOFError, KeyError, TypeError, a state_dict mismatch): to the user
        # they all mean the same thing.
        raise ModelFileError(
            f"{path}: not a GreedySign model file this version can read ({load_fault(error)})"
        ) from error


def load_fault(error: Exception) -> str:
    """Why a file did not read as a model, short: the error's type and the gist of its
    message. torch's weights_only refusal is a paragraph of advice for the file's author (load
    it with weights_only=False, allow-list its globals) around one line of fact, the
    WeightsUnpickler error: only that is kept."""
    text = str(error).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if unpickler is not None:
        # "Unsupported operand 35"; "Unsupported global: GLOBAL torch.nn...Linear was not an
        # allowed global by default. Please use ...": the first sentence.
        text = unpickler.group(1).split(". ", 1)[0]
    reason = (text.splitlines() or [""])[0].strip()
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def _read_model(path: Path | str) -> tuple[SignNet, ModelInfo, dict[str, torch.Tensor]]:
    state = load_file(path)
    if not isinstance(state, dict):
        raise ModelFileError(
            f"{path}: not a GreedySign model file (it holds a {type(state).__name__})"
        )
    if state.get("format") == CHECKPOINT_FORMAT:
        state = {**state["info"], "model": state["model"]}
    elif state.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a GreedySign model or checkpoint (no format mark)")
    config = NetConfig(**state["config"])
    model = SignNet(config, with_aux=False)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    aux = {name: value for name, value in weights.items() if name.startswith(AUX_PREFIXES)}
    model.load_state_dict({k: v for k, v in weights.items() if k not in aux}, strict=True)
    info = ModelInfo(
        config=config,
        class_names=list(state["class_names"]),
        dataset=state.get("dataset", "ctsrd"),
        task=state.get("task", "crops"),
        method=state.get("method", ""),
        metrics=dict(state.get("metrics", {})),
        split=dict(state.get("split", {})),
        data_fingerprint=state.get("data_fingerprint", ""),
        command=state.get("command", ""),
        open_set=dict(state.get("open_set", {})),
        path=str(path),
    )
    return model, info, aux
