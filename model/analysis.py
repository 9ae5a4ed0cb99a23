"""Information analysis of a trained network, with the training term's own estimator.

The paper's view of a network: feed one fixed probe batch through the encoder, take the
representation T_i of every module (or every residual block), and measure with the
matrix-based Rényi α-order estimator of model/entropy.py

    cross_mi[i][j] = I_α(T_i; T_j)   (H_α(T_i) on the diagonal)      which layers carry
                                                                     the same information
    mi_input[i]    = I_α(X; T_i)     mi_label[i] = I_α(T_i; Y)       the information plane

X is the input image batch (treated like a representation: pooled by the same rule), Y the
class labels with Gram K_ij = [y_i == y_j]. Each Gram matrix is built once (kernel width by
the training rule, `sigma_knn`) and serves every pair it is in; a pair costs one eigen-
decomposition of the Hadamard product, in float64. All values are in bits and lie in
[0, log2 n] for a probe of n images.

Across training (`analyze_run`): a run folder with encoder snapshots (model/snapshots.py)
gives, for every layer and snapshot e, I_α(T_i at e; T_i at the end), the convergence matrix
(layers x snapshots), and each layer's information-plane trajectory. The probe batch is the
same for every snapshot.

Reading the numbers. Raw values need two reference levels, and the report gives both. The
ceiling: the estimator's own I(T; T) = 2 H(K) - H(K∘K) is below H(T) for a Gaussian Gram
(K∘K is the Gram of a narrower kernel), so a layer shares less than its H with even an exact
copy of itself. The floor: with n samples H(A, B) <= log2 n, so I(A; B) >= H(A) + H(B) -
log2 n, far above 0 when entropies are high; the chance level (one side's samples shuffled
by a fixed permutation: same entropies, no pairing) measures it. `cross_mi_normalized` puts
each pair between the two: 0 at chance, 1 for a layer with itself. On the sign model shipped
on 2 December (256 held-out probe images of TSRD and TT100K, measured 5 December) H is
5.0-5.5 bits, chance 2.8-3.6 and the ceilings 3.7-4.2 bits.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from data.dataset import SignDataset
from data.load import load_dataset
from data.records import SignRecord
from data.split import train_test_split
from model.choices import (
    ANALYSIS_ALPHA,
    ANALYSIS_KNN,
    ANALYSIS_POOL_TO,
    ANALYSIS_PROBE_IMAGES,
    ANALYSIS_SUBSETS,
    ANALYSIS_UNITS,
)
from model.entropy import (
    flatten_features,
    information_from_grams,
    information_matrix,
    label_gram,
    renyi_entropy,
    representation_gram,
)
from model.greedy import SIMULTANEOUS_PHASE
from model.network import SignNet
from model.snapshots import list_snapshots, load_snapshot, snapshot_model
from model.splits import LAYERS, unit_names

_FORWARD_BATCH = 128
RECUT = "recut"  # a model without held-out hashes: its split cut again, not its held-out side


# ------------------------------------------------------------------------------ probe


@dataclass
class Probe:
    """The fixed batch every measurement uses: images (n, 3, S, S) and class ids (n,)."""

    images: Tensor
    labels: Tensor
    subset: str  # "test": held-out side of the model's split; "all": every distinct image;
    # RECUT: the model's split cut again (it records no held-out hashes)
    data: list[str]
    note: str = ""

    def __len__(self) -> int:
        return self.images.shape[0]


def probe_batch(
    data: Path | str | Sequence[Path | str],
    image_size: int,
    split: dict[str, Any] | None = None,
    *,
    probe_images: int = ANALYSIS_PROBE_IMAGES,
    subset: str = "test",
    seed: int = 0,
) -> Probe:
    """`probe_images` images drawn with `seed` from the held-out side of the model's split,
    or all of that side when it holds fewer; preprocessed as for evaluation, in dataset order.

    `split` is what the model records: the content hashes of its held-out images
    (`test_sha1`) where it has them, else its test fraction and seed, with which the split
    of each folder in `data` is cut again (0.2 and 0 when absent). `subset="all"` draws from
    every distinct image instead, and so does "test" when fewer than 2 held-out images are
    in `data` (a tiny dataset, or data the model never saw).
    """
    if subset not in ANALYSIS_SUBSETS:
        raise ValueError(f"subset must be one of {ANALYSIS_SUBSETS}, not {subset!r}")
    if probe_images < 2:
        raise ValueError(f"the probe needs at least 2 images, not {probe_images}")
    split = split or {}
    folders = [data] if isinstance(data, (str, Path)) else list(data)
    indexes = [load_dataset(folder) for folder in folders]
    note = ""
    if "test_sha1" in split:
        held_out = set(split["test_sha1"])
        distinct = _distinct([r for index in indexes for r in index.records])
        test = [r for r in distinct if r.sha1 in held_out]
        train = [r for r in distinct if r.sha1 not in held_out]
    else:
        fraction = split.get("test_fraction")  # None: not recorded, the default 0.2 then
        train, test = [], []
        for index in indexes:
            sides = train_test_split(
                index,
                test_fraction=0.2 if fraction is None else fraction,
                seed=split.get("seed") or 0,
            )
            train, test = train + sides[0], test + sides[1]
        note = (
            "the model records no held-out image hashes: its split was cut again, folder by "
            "folder, which need not be the split it trained on"
        )
    if subset == "test" and len(test) < 2:
        note = f"{len(test)} held-out images in the data: all distinct images used instead"
        subset = "all"
    pool = test if subset == "test" else _distinct(train + test)
    if subset == "test" and "test_sha1" not in split:
        subset = RECUT  # not called held-out: the cut may hold images the model trained on
    if len(pool) < 2:
        raise ValueError(f"{len(pool)} distinct images in {folders}; the probe needs 2")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), min(probe_images, len(pool))))
    dataset = SignDataset([pool[i] for i in chosen], image_size, train=False)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([item[0] for item in items])
    labels = torch.as_tensor([int(item[2]) for item in items])
    return Probe(images, labels, subset, [str(folder) for folder in folders], note)


def _distinct(records: list[SignRecord]) -> list[SignRecord]:
    """The first record of each image content, in order."""
    seen: set[str] = set()
    distinct = []
    for record in records:
        if record.sha1 not in seen:
            seen.add(record.sha1)
            distinct.append(record)
    return distinct


# ------------------------------------------------------------------- representations


def layer_names(model: SignNet, units: str = "modules") -> tuple[list[str], list[int]]:
    """Names of the analysed layers and the module (0-based) each belongs to.

    "modules": one layer per Greedy-DIB module, named by its units ("layer2+layer3");
    "blocks": one layer per encoder unit (stem, layer1.0, ...).
    """
    _check_units(units)
    if units == "blocks":
        return (
            [unit for group in model.stage_units for unit in group],
            [k for k, group in enumerate(model.stage_units) for _ in group],
        )
    names = [_group_name(group, model.config.arch) for group in model.stage_units]
    return names, list(range(len(names)))


@torch.inference_mode()
def representations(
    model: SignNet,
    images: Tensor,
    *,
    units: str = "modules",
    pool_to: int | None = ANALYSIS_POOL_TO,
    device: torch.device | str = "cpu",
) -> list[Tensor]:
    """The representation of every layer (see `layer_names`) for the batch `images`, each
    flattened to (n, d) after pooling spatial maps to at most pool_to x pool_to (float32,
    on `device`). The model runs in eval mode, in chunks."""
    _check_units(units)
    model = model.to(device).eval()
    chunks: list[list[Tensor]] = []
    for start in range(0, images.shape[0], _FORWARD_BATCH):
        x = images[start : start + _FORWARD_BATCH].to(device)
        outputs = []
        for stage in model.stages:
            for unit in stage.children():
                x = unit(x)
                if units == "blocks":
                    outputs.append(flatten_features(x, pool_to).float())
            if units == "modules":
                outputs.append(flatten_features(x, pool_to).float())
        chunks.append(outputs)
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


# ------------------------------------------------------------------ one network's view


@dataclass(frozen=True)
class Settings:
    """How representations are measured: which layers, the Rényi order, pooling, kernel."""

    units: str = "modules"
    alpha: float = ANALYSIS_ALPHA
    pool_to: int | None = ANALYSIS_POOL_TO
    knn: int = ANALYSIS_KNN  # kernel width: mean distance to the knn nearest neighbours
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_units(self.units)
        # NaN fails every comparison: a check of only alpha <= 0 let it through to a report
        # of NaN.
        if not (0 < self.alpha < math.inf and self.alpha != 1):
            raise ValueError(f"alpha must be finite, > 0 and != 1, got {self.alpha}")
        if self.knn < 1:
            raise ValueError(f"knn must be at least 1, got {self.knn}")


@dataclass
class LayerInformation:
    """One network's information analysis on one probe batch (all values in bits).

    The reference levels (see the module docstring): `self_mi[i]`, the estimator's
    I(T_i; T_i) = 2 H(K) - H(K∘K); the `chance_*` values, the same quantities with one side's
    samples shuffled. `cross_mi_normalized` = (I - chance) / (sqrt(self_i self_j) - chance):
    0 at chance, 1 on the diagonal; None where the ceiling is not above chance.
    """

    layers: list[str]
    modules: list[int]  # 1-based module of each layer
    cross_mi: list[list[float]]
    entropy: list[float]
    mi_input: list[float]
    mi_label: list[float]
    entropy_input: float
    entropy_label: float
    self_mi: list[float]
    chance_mi: list[list[float]]
    cross_mi_normalized: list[list[float | None]]
    chance_mi_input: list[float]
    chance_mi_label: list[float]
    probe_images: int
    subset: str
    data: list[str]
    settings: Settings
    model: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "subset": self.subset,
            "probe_images": self.probe_images,
            "max_bits": math.log2(self.probe_images),
            "alpha": self.settings.alpha,
            "units": self.settings.units,
            "pool_to": self.settings.pool_to,
            "knn": self.settings.knn,
            "layers": self.layers,
            "modules": self.modules,
            "cross_mi": self.cross_mi,
            "entropy": self.entropy,
            "mi_input": self.mi_input,
            "mi_label": self.mi_label,
            "entropy_input": self.entropy_input,
            "entropy_label": self.entropy_label,
            "self_mi": self.self_mi,
            "chance_mi": self.chance_mi,
            "cross_mi_normalized": self.cross_mi_normalized,
            "chance_mi_input": self.chance_mi_input,
            "chance_mi_label": self.chance_mi_label,
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class _Grams:
    """Gram matrices of one batch with their entropies: built once, used by every pair."""

    grams: list[Tensor]
    entropies: list[Tensor]

    def mi(self, i: int, other: _Grams, j: int, alpha: float, shuffle: Tensor | None = None):
        """I_α(self[i]; other[j]) in bits; with `shuffle`, other's samples permuted by it
        (the chance level: same entropies, no pairing)."""
        K_b = other.grams[j]
        if shuffle is not None:
            K_b = K_b[shuffle][:, shuffle]  # a similar matrix: same entropy
        return information_from_grams(
            self.grams[i], K_b, alpha, self.entropies[i], other.entropies[j]
        ).item()


def _layer_grams(features: list[Tensor], settings: Settings) -> _Grams:
    grams = [representation_gram(f, settings.knn) for f in features]
    return _Grams(grams, [renyi_entropy(K, settings.alpha) for K in grams])


def _probe_grams(probe: Probe, settings: Settings) -> _Grams:
    """The Grams of the input X and of the labels Y, in that order."""
    pixels = flatten_features(probe.images.to(settings.device), settings.pool_to).float()
    K_x = representation_gram(pixels, settings.knn)
    K_y = label_gram(probe.labels.to(settings.device))
    alpha = settings.alpha
    return _Grams([K_x, K_y], [renyi_entropy(K_x, alpha), renyi_entropy(K_y, alpha)])


def _shuffle(n: int, device: str) -> Tensor:
    """The one fixed permutation behind every chance level."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(device)


def _normalized(value: float, chance: float, ceiling: float) -> float | None:
    """(value - chance) / (ceiling - chance): 0 at chance, 1 at the ceiling; None when the
    ceiling is not above chance (a collapsed representation)."""
    span = ceiling - chance
    return (value - chance) / span if span > 1e-9 else None


def _layer_information(
    model: SignNet, probe: Probe, layers: _Grams, probe_grams: _Grams, settings: Settings
) -> LayerInformation:
    names, modules = layer_names(model, settings.units)
    alpha, L = settings.alpha, len(names)
    shuffle = _shuffle(len(probe), settings.device)
    matrix = information_matrix(layers.grams, alpha).tolist()
    self_mi = [layers.mi(i, layers, i, alpha) for i in range(L)]
    chance = [[layers.mi(i, layers, j, alpha, shuffle) for j in range(L)] for i in range(L)]
    chance = [[(chance[i][j] + chance[j][i]) / 2 for j in range(L)] for i in range(L)]
    normalized = [
        [
            1.0
            if i == j
            else _normalized(matrix[i][j], chance[i][j], math.sqrt(self_mi[i] * self_mi[j]))
            for j in range(L)
        ]
        for i in range(L)
    ]
    X, Y = 0, 1
    return LayerInformation(
        layers=names,
        modules=[m + 1 for m in modules],
        cross_mi=matrix,
        entropy=[matrix[i][i] for i in range(L)],
        mi_input=[probe_grams.mi(X, layers, i, alpha) for i in range(L)],
        mi_label=[layers.mi(i, probe_grams, Y, alpha) for i in range(L)],
        entropy_input=probe_grams.entropies[X].item(),
        entropy_label=probe_grams.entropies[Y].item(),
        self_mi=self_mi,
        chance_mi=chance,
        cross_mi_normalized=normalized,
        chance_mi_input=[probe_grams.mi(X, layers, i, alpha, shuffle) for i in range(L)],
        chance_mi_label=[layers.mi(i, probe_grams, Y, alpha, shuffle) for i in range(L)],
        probe_images=len(probe),
        subset=probe.subset,
        data=probe.data,
        settings=settings,
        note=probe.note,
    )


def analyze_model(
    model: SignNet, probe: Probe, settings: Settings | None = None
) -> LayerInformation:
    """Cross-MI matrix and information plane of `model`'s layers on `probe`."""
    settings = settings or Settings()
    _check_probe_size(probe, settings)
    features = _features(model, probe, settings)
    return _layer_information(
        model, probe, _layer_grams(features, settings), _probe_grams(probe, settings), settings
    )


def _check_probe_size(probe: Probe, settings: Settings) -> None:
    """Up to knn + 1 images, every kernel width falls back to the mean of all the distances
    (with two, every layer measures alike: 0.713 bits), which is not the measure of the
    training term: refused."""
    if len(probe) < settings.knn + 2:
        raise ValueError(
            f"a probe of {len(probe)} images is too few for kernel widths from "
            f"{settings.knn} neighbours (each width would be the mean of all distances): it "
            f"needs at least {settings.knn + 2}; give more images or a smaller --knn"
        )


def _features(model: SignNet, probe: Probe, settings: Settings) -> list[Tensor]:
    return representations(
        model,
        probe.images,
        units=settings.units,
        pool_to=settings.pool_to,
        device=settings.device,
    )


# ----------------------------------------------------------------- across training


EPOCH_MEANING = {
    "greedy": (
        "Snapshots are in training order; a global epoch counts the epochs of all phases in "
        "turn (module1, module2, ..., heads). Greedy training changes one module per phase: "
        "before its own phase a module keeps its random initial weights ('init': its "
        "representation changes only through the modules below it), after it the module is "
        "frozen."
    ),
    "greedy simultaneous": (
        "Snapshots are in training order; every epoch trains all modules at once, each on its "
        "own local loss from the detached output of the module below (no gradient crosses a "
        "module boundary)."
    ),
    "end-to-end": "Snapshots are in training order; every epoch trains all modules at once.",
}


@dataclass
class Convergence:
    """Each layer across a run's snapshots (rows: layers, columns: snapshots; bits).

    `mi_to_final[i][e]` = I_α(T_i at snapshot e; T_i of the final encoder). Its ceiling is
    `self_mi_final[i]`, the estimator's I(T_i; T_i) of the final representation (what a
    snapshot equal to the final encoder gives), its floor `chance_to_final[i][e]`, the same
    with the snapshot's samples shuffled; `mi_to_final_normalized` = (mi - chance) /
    (self - chance) is 0 at chance and 1 at the end (the figure; it may pass 1 a little, as a
    snapshot of other entropy can share more with the end than the end does with itself by
    this estimator). `entropy`,
    `mi_input` and `mi_label` are H_α(T_i), I_α(X; T_i) and I_α(T_i; Y) at each snapshot:
    the information-plane trajectory. `status[i][e]` is the layer's module's state then
    ("init", "training", "frozen"; see model/snapshots.py).
    """

    layers: list[str]
    modules: list[int]
    snapshots: list[dict[str, Any]]
    reference: str
    training: str  # "greedy", "greedy simultaneous" or "end-to-end"
    mi_to_final: list[list[float]]
    chance_to_final: list[list[float]]
    mi_to_final_normalized: list[list[float | None]]
    entropy: list[list[float]]
    mi_input: list[list[float]]
    mi_label: list[list[float]]
    status: list[list[str]]
    final_entropy: list[float]
    self_mi_final: list[float]

    @property
    def epoch_meaning(self) -> str:
        return EPOCH_MEANING[self.training]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "modules": self.modules,
            "training": self.training,
            "epoch_meaning": self.epoch_meaning,
            "reference": self.reference,
            "snapshots": self.snapshots,
            "global_epochs": [s["global_epoch"] for s in self.snapshots],
            "mi_to_final": self.mi_to_final,
            "chance_to_final": self.chance_to_final,
            "mi_to_final_normalized": self.mi_to_final_normalized,
            "final_entropy": self.final_entropy,
            "self_mi_final": self.self_mi_final,
            "entropy": self.entropy,
            "mi_input": self.mi_input,
            "mi_label": self.mi_label,
            "status": self.status,
        }


def analyze_snapshots(
    run_dir: Path | str,
    probe: Probe,
    final_model: SignNet | None = None,
    settings: Settings | None = None,
    *,
    final_name: str = "",
) -> tuple[LayerInformation, Convergence]:
    """The final encoder's layer analysis and the convergence of each layer over the run's
    snapshots. The final encoder is `final_model` (the run's exported model) when given,
    else the last snapshot. Snapshots are loaded one at a time."""
    settings = settings or Settings()
    paths = list_snapshots(run_dir)
    if not paths:
        raise FileNotFoundError(
            f"no snapshots in {Path(run_dir) / 'snapshots'}; train with --snapshot-every N"
        )
    if final_model is None:
        final_model = snapshot_model(load_snapshot(paths[-1]))
        final_name = final_name or f"{paths[-1]} (last snapshot)"
    alpha = settings.alpha
    _check_probe_size(probe, settings)
    probe_grams = _probe_grams(probe, settings)
    final = _layer_grams(_features(final_model, probe, settings), settings)
    final_info = _layer_information(final_model, probe, final, probe_grams, settings)
    final_info.model = final_name
    L, (X, Y) = len(final_info.layers), (0, 1)
    shuffle = _shuffle(len(probe), settings.device)

    described: list[dict[str, Any]] = []
    columns: dict[str, list[list[Any]]] = {
        name: []
        for name in ("mi_to_final", "chance_to_final", "entropy", "mi_input", "mi_label", "status")
    }
    # One network for every snapshot: each loads its encoder into it.
    model = SignNet(final_model.config, with_aux=False)
    for path in paths:
        snapshot = load_snapshot(path)
        snapshot_model(snapshot, model)
        layers = _layer_grams(_features(model, probe, settings), settings)
        columns["mi_to_final"].append([layers.mi(i, final, i, alpha) for i in range(L)])
        columns["chance_to_final"].append(
            [layers.mi(i, final, i, alpha, shuffle) for i in range(L)]
        )
        columns["entropy"].append([H.item() for H in layers.entropies])
        columns["mi_input"].append([probe_grams.mi(X, layers, i, alpha) for i in range(L)])
        columns["mi_label"].append([layers.mi(i, probe_grams, Y, alpha) for i in range(L)])
        columns["status"].append([snapshot.stage_status[m - 1] for m in final_info.modules])
        described.append(snapshot.describe())
    # Columns were collected per snapshot; the report's rows are layers.
    rows = {name: [list(row) for row in zip(*cols, strict=True)] for name, cols in columns.items()}
    greedy = any(d["phase"] != "init" and set(d["stage_status"]) != {"training"} for d in described)
    simultaneous = any(d["phase"] == SIMULTANEOUS_PHASE for d in described)
    self_mi = final_info.self_mi
    return final_info, Convergence(
        layers=final_info.layers,
        modules=final_info.modules,
        snapshots=described,
        reference=final_name,
        training="greedy" if greedy else "greedy simultaneous" if simultaneous else "end-to-end",
        mi_to_final_normalized=[
            [_normalized(v, c, self_mi[i]) for v, c in zip(row, chances, strict=True)]
            for i, (row, chances) in enumerate(
                zip(rows["mi_to_final"], rows["chance_to_final"], strict=True)
            )
        ],
        final_entropy=final_info.entropy,
        self_mi_final=self_mi,
        **rows,
    )


# ------------------------------------------------------------ from files on disk


def analyze_model_file(
    model_path: Path | str,
    data: Path | str | Sequence[Path | str] | None = None,
    settings: Settings | None = None,
    *,
    probe_images: int = ANALYSIS_PROBE_IMAGES,
    subset: str = "test",
    seed: int = 0,
) -> LayerInformation:
    """`analyze_model` of an exported model (or finished checkpoint) on `data`, by default
    the dataset folder recorded in the model; the probe follows the model's own split."""
    from model.checkpoint import load_model

    settings = settings or Settings()
    model, info = load_model(model_path, settings.device)
    probe = probe_batch(
        _data_folders(data, info.split),
        model.config.image_size,
        info.split,
        probe_images=probe_images,
        subset=subset,
        seed=seed,
    )
    result = analyze_model(model, probe, settings)
    result.model = str(model_path)
    return result


def analyze_run(
    run_dir: Path | str,
    data: Path | str | Sequence[Path | str] | None = None,
    settings: Settings | None = None,
    *,
    probe_images: int = ANALYSIS_PROBE_IMAGES,
    subset: str = "test",
    seed: int = 0,
) -> tuple[LayerInformation, Convergence]:
    """`analyze_snapshots` of a run folder. The final encoder is the run's `model.pt` when
    training has finished, else its last snapshot; the split (and default data folder) come
    from `model.pt`, else from `checkpoint.pth`."""
    from model.checkpoint import load_file, load_model
    from model.runs import CHECKPOINT_FILE, MODEL_FILE

    settings = settings or Settings()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        fault = "no such run folder"
        if run_dir.exists():
            fault = "is a file, not a run folder (give a model file with --model)"
        raise FileNotFoundError(f"{run_dir}: {fault}")
    paths = list_snapshots(run_dir)
    if not paths:
        raise FileNotFoundError(
            f"no snapshots in {run_dir / 'snapshots'}; train with --snapshot-every N"
        )
    final_model, final_name, split = None, "", {}
    if (run_dir / MODEL_FILE).is_file():
        final_model, info = load_model(run_dir / MODEL_FILE, settings.device)
        final_name, split = str(run_dir / MODEL_FILE), info.split
        image_size = final_model.config.image_size
    else:
        if (run_dir / CHECKPOINT_FILE).is_file():
            split = load_file(run_dir / CHECKPOINT_FILE).get("info", {}).get("split", {})
        image_size = load_snapshot(paths[-1]).config.image_size
    probe = probe_batch(
        _data_folders(data, split),
        image_size,
        split,
        probe_images=probe_images,
        subset=subset,
        seed=seed,
    )
    return analyze_snapshots(run_dir, probe, final_model, settings, final_name=final_name)


def _data_folders(
    data: Path | str | Sequence[Path | str] | None, split: dict[str, Any]
) -> list[Path]:
    """The dataset folders given, else those the model records (one or several)."""
    if data is not None:
        return [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    recorded = split.get("data") or []
    folders = [Path(recorded)] if isinstance(recorded, str) else [Path(d) for d in recorded]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if not folders or missing:
        where = f"{', '.join(missing)} is not here" if missing else "the model records none"
        raise FileNotFoundError(f"give the dataset folder (--data): {where}")
    return folders


# ------------------------------------------------------------------------- outputs


def to_json(info: LayerInformation, convergence: Convergence | None = None) -> dict[str, Any]:
    result = info.to_dict()
    if convergence is not None:
        result["convergence"] = convergence.to_dict()
    return result


def write_report(
    out_dir: Path | str, info: LayerInformation, convergence: Convergence | None = None
) -> list[Path]:
    """analysis.json and the figures (one per file) in `out_dir`; returns the paths."""
    from model.analysis_plots import (
        plot_convergence,
        plot_cross_mi,
        plot_information_plane,
        plot_trajectories,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "analysis.json"]
    written[0].write_text(json.dumps(to_json(info, convergence), indent=2) + "\n")
    written.append(plot_cross_mi(info, out / "cross_mi.png"))
    written.append(plot_cross_mi(info, out / "cross_mi_normalized.png", normalized=True))
    written.append(plot_information_plane(info, out / "information_plane.png"))
    if convergence is not None:
        written.append(plot_convergence(convergence, out / "convergence.png"))
        written.append(
            plot_trajectories(convergence, info, out / "information_plane_trajectories.png")
        )
    return written


def format_table(info: LayerInformation, convergence: Convergence | None = None) -> str:
    """The analysis as readable text."""
    settings = info.settings
    pooling = f"maps pooled to {settings.pool_to}x{settings.pool_to}" if settings.pool_to else ""
    tags = [f"T{i + 1} {name}" for i, name in enumerate(info.layers)]
    width = max(len(tag) for tag in tags) + 2
    heading = " " * width + "".join(f"{f'T{i + 1}':>8}" for i in range(len(tags)))
    lines = [
        f"model  {info.model}",
        f"probe  {info.probe_images} images ({_subset_words(info.subset)}) of "
        f"{', '.join(info.data)}" + (f"; {info.note}" if info.note else ""),
        f"estimator  matrix-based Renyi, alpha {settings.alpha}, kernel width: mean distance to "
        f"the {settings.knn} nearest neighbours, {pooling or 'full maps'}; bits, at most "
        f"log2 {info.probe_images} = {math.log2(info.probe_images):.2f}",
        "",
        "I(T_i; T_j) in bits, H(T_i) on the diagonal",
        heading,
        *_rows(tags, info.cross_mi, width),
        "",
        "the same, 0 = chance (samples shuffled), 1 = a layer with itself:",
        "(I - chance) / (sqrt(I(T_i;T_i) I(T_j;T_j)) - chance)",
        heading,
        *_rows(tags, info.cross_mi_normalized, width),
        "",
        "information plane"
        + " " * (width - 17)
        + "".join(f"{h:>8}" for h in ("H(T)", "I(T;T)", "I(X;T)", "chance", "I(T;Y)", "chance")),
        *_rows(
            tags,
            [
                list(values)
                for values in zip(
                    info.entropy,
                    info.self_mi,
                    info.mi_input,
                    info.chance_mi_input,
                    info.mi_label,
                    info.chance_mi_label,
                    strict=True,
                )
            ],
            width,
        ),
        f"H(X) = {info.entropy_input:.3f} bits (input), H(Y) = {info.entropy_label:.3f} bits "
        "(labels); I(T;T) is the estimator's own, 2 H(K) - H(K∘K)",
    ]
    if convergence is not None:
        lines += ["", *_convergence_lines(convergence, tags, width)]
    return "\n".join(lines)


def _rows(tags: list[str], matrix: list[list[float | None]], width: int) -> list[str]:
    return [
        f"{tag:<{width}}" + "".join("     n/a" if v is None else f"{v:8.3f}" for v in row)
        for tag, row in zip(tags, matrix, strict=True)
    ]


def _convergence_lines(convergence: Convergence, tags: list[str], width: int) -> list[str]:
    mark = {"init": "i", "training": " ", "frozen": "f"}
    lines = [
        "convergence: I(T_i at a snapshot; T_i at the end), 0 = chance, 1 = the final "
        f"representation itself; final encoder {convergence.reference}",
        convergence.epoch_meaning + " Marks: i = module at init, f = module frozen.",
        f"{'global epoch':<{width}}"
        + "".join(f"{s['global_epoch']:>8}" for s in convergence.snapshots),
        f"{'phase':<{width}}" + "".join(f"{s['phase'][:7]:>8}" for s in convergence.snapshots),
    ]
    for tag, row, status in zip(
        tags, convergence.mi_to_final_normalized, convergence.status, strict=True
    ):
        cells = "".join(
            ("    n/a" if v is None else f"{v:7.3f}") + mark[s]
            for v, s in zip(row, status, strict=True)
        )
        lines.append(f"{tag:<{width}}" + cells)
    return lines


def _subset_words(subset: str) -> str:
    if subset == "test":
        return "held-out side of the model's split"
    if subset == RECUT:
        return "the model's split cut again: may hold images it trained on"
    return "all distinct images"


# ------------------------------------------------------------------------- helpers


def _check_units(units: str) -> None:
    if units not in ANALYSIS_UNITS:
        raise ValueError(f"units must be one of {ANALYSIS_UNITS}, not {units!r}")


def _group_name(group: list[str], arch: str) -> str:
    """Units of one module, whole layers by their layer name: "layer2+layer3", "stem+layer1.0"."""
    all_units = unit_names(arch)
    parts: list[str] = []
    for layer in ("stem", *LAYERS):
        blocks = [u for u in all_units if u == layer or u.startswith(layer + ".")]
        held = [u for u in blocks if u in group]
        parts += [layer] if held and held == blocks else held
    return "+".join(parts)
