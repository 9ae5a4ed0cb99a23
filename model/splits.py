"""Where the encoder is cut into the K Greedy-DIB modules: split points as data.

The encoder is a flat list of named units, in network order:

    stem        conv1 + bn1 + relu            (stride 2)
    layer1.0    maxpool + first block of layer1 (stride 4)
    layer1.1 …  one unit per residual block of layer1..layer4 (strides 4, 8, 16, 32)

A split is K groups of consecutive units; group k is Greedy-DIB module k. It is either a
named entry of `SPLITS` or a spec string: "," separates modules, "+" joins units within a
module, and a layer name stands for all of its blocks, e.g. "stem,layer1,layer2,layer3+layer4"
or "stem,layer1.0,layer1.1,layer2+layer3+layer4".

Why "balanced" is the default. Greedy training keeps only the current module's activations
and optimizer state, so peak memory is set by the heaviest module. Activations and parameters
sit at opposite ends of a ResNet: the stem and layer1 work at 1/2 and 1/4 resolution and hold
two thirds of the activations, while layer3 and layer4 hold 94 % of the parameters (and with
Adam, three more copies of them as gradient and moments) but few activations. Per sample at
64x64, outputs of every leaf module (conv, bn, relu, pool) of resnet18, from
`model.network.activation_elements("resnet18", 64)` and `parameter_counts("resnet18")`:

    unit        activations   parameters
    stem          196,608          9,536
    layer1.0      114,688         73,984
    layer1.1       98,304         73,984
    layer2.0       65,536        230,144
    layer2.1       49,152        295,424
    layer3.0       32,768        919,040
    layer3.1       24,576      1,180,672
    layer4.0       16,384      3,673,088
    layer4.1       12,288      4,720,640

"balanced" (stem | layer1 | layer2+layer3 | layer4) gives the two activation-heavy units a
module each and puts layer4, which holds 75 % of the parameters, alone in the last module:
with AdamW every trained parameter costs four copies (weight, gradient, two moments), so
layer3+layer4 together would make the last module the heaviest of all. Measured by
`bench/train_memory.py` (batch 64, 64x64, AdamW; saved-for-backward + weights + gradients +
optimizer state): 69 | 54 | 83 | 158 MB for the four modules and 142 MB for the heads phase,
against 381 MB end to end (ratio 0.42); with layer3+layer4 as the last module it was 192 MB
(0.50). End-to-end training holds all 610k activation elements and all 11.2M parameters at
once. For resnet34 the same cut gives 197k | 311k | 369k | 41k of 918k activations and
0.01M | 0.22M | 7.9M | 13.1M of 21.3M parameters.

"lean" (stem+layer1 | layer2+layer3 | layer4.0 | layer4.1) is the split for the sequential
schedule with `--cache-prefix` (model/prefix_cache.py): layer4 is cut in two (44 % of its
parameters in layer4.0, 56 % in layer4.1) so that no module holds all of it, and the heaviest
phase is the decoder's (ratio 0.38 at 64x64), and the
first stored prefix is layer1's output, a quarter of the stem's.

"balanced" keeps module boundaries at layer boundaries; "k2" and "k3" may cut inside a layer:
each minimises the largest module's activations over all K-module splits (resnet18: 311k |
299k and 197k | 213k | 201k). Activation counts scale with the pixel count, so these
proportions hold at every input size divisible by 32.
"""

from __future__ import annotations

LAYERS = ("layer1", "layer2", "layer3", "layer4")
BLOCKS_PER_LAYER: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}
DEFAULT_SPLIT = "balanced"

# (arch, name) -> K groups; each group is "+"-joined unit or layer names.
SPLITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("resnet18", "balanced"): ("stem", "layer1", "layer2+layer3", "layer4"),
    ("resnet18", "layers"): ("stem", "layer1", "layer2", "layer3", "layer4"),
    ("resnet18", "k3"): ("stem", "layer1", "layer2+layer3+layer4"),
    ("resnet18", "k2"): ("stem+layer1.0", "layer1.1+layer2+layer3+layer4"),
    ("resnet18", "lean"): ("stem+layer1", "layer2+layer3", "layer4.0", "layer4.1"),
    ("resnet18", "blocks"): (
        "stem",
        *("layer1.0", "layer1.1", "layer2.0", "layer2.1"),
        *("layer3.0", "layer3.1", "layer4.0", "layer4.1"),
    ),
    ("resnet34", "balanced"): ("stem", "layer1", "layer2+layer3", "layer4"),
    ("resnet34", "layers"): ("stem", "layer1", "layer2", "layer3", "layer4"),
    ("resnet34", "k3"): (
        "stem+layer1.0",
        "layer1.1+layer1.2+layer2.0+layer2.1",
        "layer2.2+layer2.3+layer3+layer4",
    ),
    ("resnet34", "k2"): ("stem+layer1", "layer2+layer3+layer4"),
    ("resnet34", "lean"): ("stem+layer1", "layer2+layer3", "layer4.0", "layer4.1+layer4.2"),
    ("resnet34", "blocks"): (
        "stem",
        *("layer1.0", "layer1.1", "layer1.2"),
        *("layer2.0", "layer2.1", "layer2.2", "layer2.3"),
        *("layer3.0", "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5"),
        *("layer4.0", "layer4.1", "layer4.2"),
    ),
}


def unit_names(arch: str) -> list[str]:
    """All units of `arch` in network order: stem, layer1.0, layer1.1, ..."""
    blocks = _blocks_per_layer(arch)
    return ["stem"] + [
        f"{layer}.{i}" for layer, n in zip(LAYERS, blocks, strict=True) for i in range(n)
    ]


def tap_units(arch: str) -> list[str]:
    """The 5 units whose outputs are the multi-scale features (strides 2, 4, 8, 16, 32)."""
    blocks = _blocks_per_layer(arch)
    return ["stem"] + [f"{layer}.{n - 1}" for layer, n in zip(LAYERS, blocks, strict=True)]


def split_names(arch: str) -> list[str]:
    """Names of the `SPLITS` entries for `arch`."""
    _blocks_per_layer(arch)
    return [name for table_arch, name in SPLITS if table_arch == arch]


def resolve_split(arch: str, split: str = DEFAULT_SPLIT) -> list[list[str]]:
    """K groups of unit names for a named split or a spec string; raises ValueError if invalid.

    Every unit must appear exactly once, in network order; errors list the valid names.
    """
    units = unit_names(arch)
    groups = SPLITS.get((arch, split)) or tuple(split.split(","))
    resolved = [_expand_group(arch, split, group, units) for group in groups]

    flat = [unit for group in resolved for unit in group]
    repeated = sorted({unit for unit in flat if flat.count(unit) > 1}, key=units.index)
    if repeated:
        raise ValueError(f"split {split!r} lists {', '.join(repeated)} more than once")
    missing = [unit for unit in units if unit not in flat]
    if missing:
        raise ValueError(
            f"split {split!r} leaves out {', '.join(missing)}; every unit must be in one module"
        )
    if flat != units:
        raise ValueError(
            f"split {split!r} is out of network order; the order is {', '.join(units)}"
        )
    return resolved


def _blocks_per_layer(arch: str) -> tuple[int, int, int, int]:
    if arch not in BLOCKS_PER_LAYER:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(BLOCKS_PER_LAYER)}")
    return BLOCKS_PER_LAYER[arch]


def _expand_group(arch: str, split: str, group: str, units: list[str]) -> list[str]:
    tokens = [token.strip() for token in group.split("+")]
    if "" in tokens:
        raise ValueError(f"split {split!r} has an empty module or unit name in {group!r}")
    expanded = []
    for token in tokens:
        if token in LAYERS:
            expanded += [unit for unit in units if unit.startswith(token + ".")]
        elif token in units:
            expanded.append(token)
        else:
            raise ValueError(
                f"unknown unit {token!r} in split {split!r}. Named splits for {arch}: "
                f"{', '.join(split_names(arch))}. Units: {', '.join(units)}; "
                f"layer names ({', '.join(LAYERS)}) stand for all of their blocks"
            )
    return expanded
