"""The GreedySign network: a ResNet encoder cut into K Greedy-DIB modules, per-module auxiliary
heads, a classification head and a U-Net segmentation decoder.

    x ─ stages[0] ─ T_0 ─ stages[1] ─ T_1 ─ … ─ stages[K-1] ─ T_{K-1}
            │               │                        │
      aux_cls[0]/aux_mask[0] …                 aux_cls[K-1]/aux_mask[K-1]    (Greedy-DIB only)

    multi-scale features (stem, layer1..layer4 outputs, strides 2..32) ─ seg_decoder ─ seg_head
    layer4 output ─ cls_head        (for Greedy-DIB, cls_head is aux_cls[K-1] itself)

The encoder is torchvision's ResNet (no downloaded weights) as a flat list of named units
(see model/splits.py); a split groups them into the K modules `stages`. The decoder and heads
are segmentation-models-pytorch 0.6 parts built from channel numbers only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18, resnet34

from model.choices import ARCH_NAMES
from model.splits import DEFAULT_SPLIT, LAYERS, resolve_split, tap_units

ARCHS = {"resnet18": resnet18, "resnet34": resnet34}
assert tuple(ARCHS) == ARCH_NAMES, "model/options.py lists the same architectures"
CLS_HEADS = ("aux", "linear")
# State-dict prefixes of the auxiliary heads: training only, never exported.
AUX_PREFIXES = ("aux_cls.", "aux_mask.", "aux_recon.")
SEG_CHANNELS = (1, 2)  # sign pixels; sign pixels and sign cores
LINEAR_HEAD_DROPOUT = 0.2


@dataclass
class NetConfig:
    """Everything needed to rebuild a SignNet; checkpoints store `dataclasses.asdict(config)`.

    `image_size` is the training input size (square); the network itself takes any H x W.
    `decoder_channels` are the 5 U-Net decoder blocks, deepest first: the last ones run at
    1/2 and full resolution, so they are kept narrow. Their activations are what the heads
    phase of Greedy-DIB holds: at batch 64, 64x64, (128, 64, 32, 16, 16) saves 152 MB for
    backward, (64, 32, 16, 8, 8) 90 MB (bench/train_memory.py); a sign mask needs no more.
    `aux_width` is the conv and hidden width of each auxiliary classifier. `aux_reduce_to`:
    an auxiliary classifier halves its input with stride-2 conv3x3-BN-ReLU blocks until the
    map (at `image_size`) is at most this many pixels a side, as DGL's auxiliary nets do;
    0 gives the single full-resolution conv3x3-BN-ReLU. `cls_head` is the classification
    head's form: "aux", an auxiliary classifier (Greedy-DIB trains it as the last module's),
    or "linear", global pool -> dropout -> linear (what end-to-end training does best with:
    with the "aux" form it measured 73.9 % against 93.4 % on real CTSRD, seed 0).
    `seg_channels`: the maps the segmentation head draws. 1: sign pixels. 2 (scene models):
    sign pixels and sign cores, the pixels deep inside each sign; signs that touch share one
    component of sign pixels but not of cores, so the cores tell them apart (model/detect.py).
    """

    arch: str = "resnet18"
    num_classes: int = 58
    image_size: int = 64
    split: str = DEFAULT_SPLIT
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8, 8)
    aux_width: int = 128
    aux_reduce_to: int = 4
    cls_head: str = "aux"
    seg_channels: int = 1

    def __post_init__(self) -> None:
        # A config read back from JSON holds a list here.
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; known: {', '.join(ARCHS)}")
        resolve_split(self.arch, self.split)
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ValueError(
                f"decoder_channels needs 5 positive widths, got {self.decoder_channels}"
            )
        if self.cls_head not in CLS_HEADS:
            raise ValueError(f"cls_head must be one of {CLS_HEADS}, got {self.cls_head!r}")
        if self.seg_channels not in SEG_CHANNELS:
            raise ValueError(f"seg_channels must be one of {SEG_CHANNELS}, got {self.seg_channels}")
        if self.num_classes < 1 or self.image_size < 1 or self.aux_width < 1:
            raise ValueError("num_classes, image_size and aux_width must be positive")


def encoder_units(resnet: ResNet) -> list[tuple[str, nn.Module]]:
    """A torchvision ResNet as its flat list of named units: stem, layer1.0, layer1.1, ...

    The units share the ResNet's modules (and weights). The maxpool opens layer1.0, as in
    torchvision's forward, so that the stem's output is the stride-2 feature.
    """
    units: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu))
    ]
    for layer in LAYERS:
        for i, block in enumerate(getattr(resnet, layer)):
            unit = nn.Sequential(resnet.maxpool, block) if (layer, i) == ("layer1", 0) else block
            units.append((f"{layer}.{i}", unit))
    return units


class SignNet(nn.Module):
    """ResNet encoder in K Greedy-DIB modules plus classification and segmentation heads.

    `stages[k]` is Greedy-DIB module k, an nn.Sequential of its units, so stages[k](T_{k-1})
    is T_k (the name `modules` would shadow nn.Module.modules()). `stage_units[k]` names its
    units. `aux_cls[k]` and `aux_mask[k]` are module k's auxiliary heads; `with_aux=False`
    builds the inference model without them, which loads `inference_state_dict()` strictly.

    With `cls_head="aux"` and aux heads, the last module's auxiliary classifier *is* the
    classification head (one module under two names): it reads the deepest feature, and
    Greedy-DIB trains it together with that module rather than afresh on the frozen encoder,
    where it measured 1-3 points less accurate.
    """

    def __init__(self, config: NetConfig, with_aux: bool = True):
        super().__init__()
        self.config = config
        self.num_frozen = 0
        self.stage_units = resolve_split(config.arch, config.split)
        units = dict(encoder_units(_build_resnet(config.arch)))
        self.stages = nn.ModuleList(
            nn.Sequential(OrderedDict((_key(name), units[name]) for name in group))
            for group in self.stage_units
        )
        self._tap_keys = {_key(name) for name in tap_units(config.arch)}
        self.stage_channels, self.feature_channels, stage_sizes = self._probe_shapes()

        if config.cls_head == "aux":
            self.cls_head = _aux_classifier(
                self.feature_channels[-1],
                stage_sizes[-1],
                config.aux_width,
                config.num_classes,
                config.aux_reduce_to,
            )
        else:
            self.cls_head = ClassificationHead(
                self.feature_channels[-1], config.num_classes, dropout=LINEAR_HEAD_DROPOUT
            )
        # Index 0 of smp's encoder channel list is the input image; the decoder drops it.
        self.seg_decoder = UnetDecoder([3, *self.feature_channels], config.decoder_channels)
        self.seg_head = SegmentationHead(
            config.decoder_channels[-1], config.seg_channels, kernel_size=3
        )
        initialize_decoder(self.seg_decoder)
        initialize_head(self.seg_head)
        # After the decoder, as it always was: the random draws keep their order, so end-to-end
        # runs from before the "aux" head existed reproduce bit for bit. The "aux" head keeps
        # PyTorch's default init, like every auxiliary classifier.
        if config.cls_head == "linear":
            initialize_head(self.cls_head)

        self.aux_cls: nn.ModuleList | None = None
        self.aux_mask: nn.ModuleList | None = None
        self.aux_recon: nn.ModuleList | None = None
        if with_aux:
            if config.cls_head != "aux":
                raise ValueError("with aux heads, the classification head is the last aux one")
            self.aux_cls = nn.ModuleList(
                _aux_classifier(c, size, config.aux_width, config.num_classes, config.aux_reduce_to)
                for c, size in zip(self.stage_channels[:-1], stage_sizes[:-1], strict=True)
            )
            self.aux_cls.append(self.cls_head)
            self.aux_mask = nn.ModuleList(
                nn.Conv2d(c, config.seg_channels, 1) for c in self.stage_channels
            )
            # InfoPro's information-preserving term: the input image rebuilt from T_k (used
            # only with a reconstruction weight, model/greedy.py).
            self.aux_recon = nn.ModuleList(
                nn.Conv2d(c, 3, 3, padding=1) for c in self.stage_channels
            )

    @property
    def num_stages(self) -> int:
        """K, the number of Greedy-DIB modules."""
        return len(self.stages)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Full inference path: (class logits (N, classes), mask logits (N, C, H, W)), C the
        config's seg_channels."""
        return self.heads(self.encode(x), x.shape[-2:])

    def forward_stage(self, k: int, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """T_k from T_{k-1}, and the multi-scale features that module k produces on the way."""
        taps = []
        for key, unit in self.stages[k].named_children():
            x = unit(x)
            if key in self._tap_keys:
                taps.append(x)
        return x, taps

    def encode(self, x: Tensor) -> list[Tensor]:
        """The 5 multi-scale features: stem, layer1..layer4 outputs (strides 2, 4, 8, 16, 32)."""
        features = []
        for k in range(self.num_stages):
            x, taps = self.forward_stage(k, x)
            features += taps
        return features

    def stage_input(self, k: int, x: Tensor) -> Tensor:
        """T_{k-1}, the input of module k (x itself for k = 0).

        The prefix stages[0..k-1] runs under no_grad, so no graph or activation of it is kept:
        that is where greedy training saves memory. Freeze the prefix first (`freeze_stages`),
        or its BatchNorm statistics keep moving.
        """
        with torch.no_grad():
            for stage in self.stages[:k]:
                x = stage(x)
        return x.detach()

    def heads(self, features: list[Tensor], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """cls_head on the deepest feature and the decoder on all 5; masks at `size` (H, W)."""
        return self.cls_head(features[-1]), self.segment(features, size)

    def segment(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Mask logits (N, C, H, W) at `size` from the 5 multi-scale features."""
        # smp's UnetDecoder takes the input image as item 0 but reads only its spatial shape.
        placeholder = features[0].new_empty((0, 0, *size))
        return self.seg_head(self.seg_decoder([placeholder, *features]))

    def aux_forward(self, k: int, t: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Module k's auxiliary (class logits, mask logits upsampled to `size`) from T_k."""
        if self.aux_cls is None or self.aux_mask is None:
            raise RuntimeError("this SignNet was built with with_aux=False: it has no aux heads")
        mask_logits = F.interpolate(
            self.aux_mask[k](t), size=tuple(size), mode="bilinear", align_corners=False
        )
        return self.aux_cls[k](t), mask_logits

    def freeze_stages(self, k: int) -> SignNet:
        """Freeze exactly modules 0..k-1 (no grad, BatchNorm in eval), each with its auxiliary
        heads; the rest are trainable.

        `train()` keeps frozen modules in eval, so their BatchNorm statistics stay put.
        `freeze_stages(num_stages)` freezes the whole encoder and, with it, the classification
        head that the last module trained (the segmentation phase).
        """
        if not 0 <= k <= self.num_stages:
            raise ValueError(f"k must be in 0..{self.num_stages}, got {k}")
        self.num_frozen = k
        for i in range(self.num_stages):
            for part in self._module_parts(i):
                part.requires_grad_(i >= k)
        return self.train(self.training)

    def unfreeze_all(self) -> SignNet:
        return self.freeze_stages(0)

    def train(self, mode: bool = True) -> SignNet:
        super().train(mode)
        for i in range(self.num_frozen):
            for part in self._module_parts(i):
                part.eval()
        return self

    def _module_parts(self, k: int) -> list[nn.Module]:
        """Greedy-DIB module k: its stage and, when built with them, its auxiliary heads."""
        if self.aux_cls is None or self.aux_mask is None or self.aux_recon is None:
            return [self.stages[k]]
        return [self.stages[k], self.aux_cls[k], self.aux_mask[k], self.aux_recon[k]]

    def aux_reconstruction(self, k: int, t: Tensor, size: tuple[int, int]) -> Tensor:
        """Module k's rebuild of the (normalised) input image from T_k, at `size` (H, W)."""
        if self.aux_recon is None:
            raise RuntimeError("this SignNet was built with with_aux=False: it has no aux heads")
        return F.interpolate(
            self.aux_recon[k](t), size=tuple(size), mode="bilinear", align_corners=False
        )

    def inference_state_dict(self) -> dict[str, Tensor]:
        """The state dict without aux heads: what `SignNet(config, with_aux=False)` loads."""
        return {
            name: value
            for name, value in self.state_dict().items()
            if not name.startswith(AUX_PREFIXES)
        }

    def _probe_shapes(self) -> tuple[list[int], list[int], list[int]]:
        """Channels of each T_k and of each multi-scale feature, and the side of each T_k at
        the training size, from a dummy forward pass.

        Runs in eval mode, so the dummy batch leaves no trace in the BatchNorm statistics.
        """
        self.stages.eval()
        stage_channels, feature_channels, stage_sizes = [], [], []
        with torch.no_grad():
            size = self.config.image_size
            x = torch.zeros(1, 3, size, size)
            for k in range(self.num_stages):
                x, taps = self.forward_stage(k, x)
                stage_channels.append(x.shape[1])
                stage_sizes.append(max(x.shape[-2:]))
                feature_channels += [tap.shape[1] for tap in taps]
        self.stages.train()
        return stage_channels, feature_channels, stage_sizes


def activation_elements(arch: str, image_size: int = 64) -> dict[str, int]:
    """Per-sample activation elements of each encoder unit at image_size x image_size.

    Counts the outputs of every leaf module call (conv, bn, relu, maxpool): a proxy for what
    autograd keeps for the backward pass. The residual additions are not modules and are not
    counted.
    """
    counts = {}
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        for name, unit in encoder_units(_build_resnet(arch)):
            x, counts[name] = _run_counting_outputs(unit.eval(), x)
    return counts


def parameter_counts(arch: str) -> dict[str, int]:
    """Number of parameters of each encoder unit."""
    return {
        name: sum(p.numel() for p in unit.parameters())
        for name, unit in encoder_units(_build_resnet(arch))
    }


def _run_counting_outputs(unit: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """unit(x) and the total number of elements output by its leaf module calls."""
    sizes: list[int] = []
    leaves = [m for m in unit.modules() if next(m.children(), None) is None]
    hooks = [
        m.register_forward_hook(lambda _m, _in, out: sizes.append(out.numel())) for m in leaves
    ]
    try:
        out = unit(x)
    finally:
        for hook in hooks:
            hook.remove()
    return out, sum(sizes)


def _build_resnet(arch: str) -> ResNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](weights=None)


def _key(unit_name: str) -> str:
    # Submodule names cannot contain ".", so unit layer1.0 is stored as stages[k].layer1_0.
    return unit_name.replace(".", "_")


def _aux_classifier(
    in_channels: int, side: int, width: int, num_classes: int, reduce_to: int
) -> nn.Sequential:
    """conv3x3-BN-ReLU blocks (stride 2 while the map is larger than `reduce_to`) -> global
    average pool -> MLP -> class logits.

    A single conv at full resolution makes a shallow probe: the module then learns features
    that a linear read-out separates, and discards what deeper layers would have used. The
    strided blocks make the probe a small CNN (DGL's finding: deeper auxiliary nets make
    greedy training close to end-to-end), and cost less than one full-resolution conv.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    while True:
        stride = 2 if reduce_to and side > reduce_to else 1
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels, side = width, (side + 1) // stride
        if stride == 1:
            break
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
        nn.Linear(width, num_classes),
    )
