"""One training run in several processes: torchrun + DistributedDataParallel.

    torchrun --standalone --nproc-per-node N -m app train ...      (make train NPROC=N)

torchrun starts N copies of `greedysign train` and gives each RANK, LOCAL_RANK and
WORLD_SIZE; `process_group()` joins them (nccl on CUDA, one GPU per local rank; gloo on the
CPU). A plain `greedysign train` (no WORLD_SIZE, or 1) joins nothing, and every helper here
is then the identity: the one-process run is exactly what it was.

What the ranks share and split:
- data: the epoch's order comes from (seed, epoch) as in one process (model/train.py's
  EpochShuffle), rank r takes every world-th index of it and batch / world images a step
  (`train_sampler`): the ranks' batches of a step are together the one-process batch. The
  test set is split the same way (`evaluation_sampler`), and the evaluations are put back
  together (`gather_accumulator`), in the one-process order;
- gradients: `data_parallel` puts DDP around what the phase trains and nothing else: the whole
  network for SGD; module k and its auxiliary heads for greedy module k (its frozen prefix runs
  locally, without gradient, and is never synchronised); the decoder in the heads phase. A
  greedy step backpropagates several local losses one after another (the simultaneous
  schedule: one per module, then the decoder's), so each trained module and head gets a DDP
  wrapper of its own, put in its place inside the SignNet for the length of an epoch: every
  wrapper sees one forward and one backward per step, as DDP expects, and the step code in
  model/greedy.py runs unchanged. A stage is wrapped unit by unit, because
  `SignNet.forward_stage` calls its units one by one;
- the information term: each rank computes H_α over its own share of the batch, batch / world
  representations, and the gradients are averaged; so it is not the one-process term (its
  ceiling is log2 of the share, not of the batch);
- BatchNorm: each rank normalises with its own share of the batch (as DDP does by default;
  SyncBatchNorm needs CUDA); DDP hands rank 0's running statistics to the others before each
  forward, and `data_parallel` again at the end of the epoch, so every rank evaluates, and
  rank 0 saves, the same model;
- files and output: rank 0 alone writes (checkpoints, run folder, plots, snapshots,
  runs/LATEST) and prints (`process_group` sends the others' stdout to /dev/null).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from model.device import resolve_device
from model.greedy import LossSettings, Phase, end_to_end_step, enter_phase
from model.metrics import EvalAccumulator
from model.network import SignNet


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0


@contextmanager
def process_group(device: str = "auto") -> Iterator[torch.device]:
    """The training device; under torchrun, inside the process group of all the ranks.

    On CUDA each process takes the GPU of its local rank (`--device cuda` or `auto`), and the
    ranks talk over nccl; on the CPU over gloo. A default process group that the caller has
    already made is used as it is (and left to the caller). The other ranks' stdout is
    silenced: rank 0 speaks for the run (errors still reach stderr)."""
    joined = dist.is_initialized()
    if not joined and not launched_by_torchrun():
        yield resolve_device(device)
        return
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        # torchrun sets LOCAL_WORLD_SIZE; other launchers may not (then assume one machine).
        local_ranks = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
        if resolved.index is not None and int(local_ranks) > 1:
            # Every rank would take that one GPU, and nccl refuses a GPU twice.
            raise ValueError(
                f"--device {device}: under torchrun each process takes the GPU of its local "
                "rank; give --device cuda (or auto)"
            )
        if resolved.index is None:  # through resolve_device: a rank past the GPUs is refused
            resolved = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        torch.cuda.set_device(resolved)
    if not joined and resolved.type == "cuda":
        dist.init_process_group("nccl", device_id=resolved)
    elif not joined:
        dist.init_process_group("gloo")
    try:
        if is_main():
            yield resolved
        else:
            with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
                yield resolved
    finally:
        if not joined:
            dist.destroy_process_group()


@contextmanager
def local_main_first() -> Iterator[None]:
    """Each machine's local rank 0 runs the block before that machine's other ranks do (it
    may generate the synthetic set into .cache/, which the others then read)."""
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if world_size() > 1 and not first:
        dist.barrier()
    yield
    if world_size() > 1 and first:
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """The sums over the ranks of each of `values` (float64)."""
    if world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


# ------------------------------------------------------------------------------ data


class RankShare(Sampler[int]):
    """Rank r's share of another sampler's order: its items r, r + world, r + 2 world, ...

    `even` (training): the order is first cut to a multiple of world, so that every rank takes
    as many steps; with a per-rank batch of batch / world, step i of the ranks together is step
    i of one process. Otherwise (evaluation) every item is taken once, by one rank."""

    def __init__(
        self, sampler: Sampler[int] | range, even: bool, place: tuple[int, int] | None = None
    ):
        self.sampler, self.even = sampler, even
        # (rank, world size): this process's unless given.
        self.rank, self.world = place or (rank(), world_size())

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(self.sampler)
        if self.even:
            order = order[: len(order) // self.world * self.world]
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        size = len(self.sampler)
        return size // self.world if self.even else len(range(self.rank, size, self.world))


def train_sampler(sampler: Sampler[int]) -> Sampler[int]:
    """The training sampler of this rank: `sampler` itself in one process."""
    return RankShare(sampler, even=True) if world_size() > 1 else sampler


def evaluation_sampler(size: int) -> RankShare | None:
    """This rank's share of an evaluation set; None (the loader's own order) in one process."""
    return RankShare(range(size), even=False) if world_size() > 1 else None


def gather_accumulator(accumulator: EvalAccumulator) -> EvalAccumulator:
    """Every rank's evaluation of its shard as one, with the images in the order one process
    would have seen them: the per-image arrays gathered, the mask and box sums added."""
    world = world_size()
    if world == 1:
        return accumulator
    parts: list[EvalAccumulator] = [accumulator] * world
    dist.all_gather_object(parts, accumulator)
    merged = EvalAccumulator(accumulator.num_known, accumulator.label_names)
    total = sum(part.images for part in parts)
    # Rank r scored images r, r + world, ... (RankShare).
    order = torch.cat([torch.arange(r, total, world) for r in range(world)]).argsort()
    for name in ("_labels", "_best", "_best_known_probability"):  # EvalAccumulator's state
        per_image = [tensor for part in parts for tensor in getattr(part, name)]
        setattr(merged, name, [torch.cat(per_image)[order]] if per_image else [])
    for part in parts:
        merged.pixel_intersection += part.pixel_intersection
        merged.pixel_union += part.pixel_union
        merged.mask_iou_sum += part.mask_iou_sum
        merged.box_iou_sum += part.box_iou_sum
        merged.box_images += part.box_images
    return merged


# ------------------------------------------------------------------------- gradients


@contextmanager
def data_parallel(model: SignNet, phase: Phase, losses: LossSettings) -> Iterator[Phase]:
    """The phase to train one epoch with: `phase` itself in one process; under torchrun, with
    DDP around exactly the modules it trains (see the module docstring), taken off again
    when the epoch ends, so that evaluation, checkpoints and the next phase see the plain
    SignNet."""
    if world_size() == 1:
        yield phase
        return
    enter_phase(model, phase)  # the prefix must not require grad when DDP is built
    if len(phase.trainable) == 1 and phase.trainable[0] is model:  # end to end: one wrapper
        yield replace(phase, step=end_to_end_step(_ddp(model), losses))
    else:
        wrapped = [(part, _ddp(part)) for part in _trained_parts(model, phase)]
        slots = [
            (parent, name, part, wrapper)
            for part, wrapper in wrapped
            for parent, name in _places(model, part)
        ]
        for parent, name, _part, wrapper in slots:
            parent._modules[name] = wrapper
        try:
            yield phase
        finally:
            for parent, name, part, _wrapper in slots:
                parent._modules[name] = part
    for buffer in model.buffers():  # BatchNorm statistics: rank 0's, everywhere
        dist.broadcast(buffer, src=0)


def _trained_parts(model: SignNet, phase: Phase) -> list[nn.Module]:
    """What gets a wrapper: each trained module and head; a trained stage unit by unit."""
    parts: list[nn.Module] = []
    for module in phase.trainable:
        for item in module if isinstance(module, nn.ModuleList) else [module]:
            is_stage = any(item is stage for stage in model.stages)
            parts += list(item.children()) if is_stage else [item]
    return parts


def _places(model: SignNet, part: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every (parent, name) under which `part` sits in the model: the classification head is
    also aux_cls[K-1]."""
    return [
        (parent, name)
        for parent in model.modules()
        for name, child in parent._modules.items()
        if child is part
    ]


def _ddp(module: nn.Module) -> DistributedDataParallel:
    # The inputs are on the module's device already (device_ids=None: DDP moves nothing).
    return DistributedDataParallel(module, device_ids=None)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
