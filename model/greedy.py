"""Greedy-DIB and end-to-end training as a list of phases, one optimizer per phase.

    Greedy-DIB, module k = 0..K-1 (prefix frozen: eval mode, no_grad, detached boundary):
        T_{k-1} = stage_input(k, x)
        T_k     = stages[k](T_{k-1})
        L_k     = CE(aux_cls[k](T_k), y) + λ_mask·(BCE+Dice)(aux_mask[k](T_k), m) + β·R(T_k)
        R       = H_α(T_k) (--reg entropy) | I_α(T_{k-1}; T_k) (--reg mi) | 0 (--reg none)
    aux_cls[K-1] is the classification head, so the last module trains it; then the
    segmentation phase, on the frozen encoder:
        L = λ_mask·(BCE+Dice)(seg_decoder(f_1..f_5), m)
    End-to-end SGD is one phase with L = CE(cls_head(f_5), y) + λ_mask·(BCE+Dice)(...)
    through the whole network.

Two schedules for the greedy methods. "sequential" (the paper's) trains module 1 for its
epochs, then module 2 on the frozen module 1, and so on, then the decoder: K + 1 phases.
"simultaneous" (DGL's decoupled greedy training) is one phase in which every batch trains
every module on the same L_k, each from the detached output of the module below, and the
decoder from the detached features: no gradient crosses a module boundary either way, but
each batch is forwarded once instead of once per module.

A fine-tune from a model file (`--init model.pt`) starts without the aux heads, which a model
file does not keep; fresh heads first pull their modules toward whatever fits them. With
`aux_warmup_epochs`, the aux heads alone train first on the frozen encoder (the "aux-heads"
phase), so the modules then learn from heads that already read them.

A step yields its local losses one by one, and the trainer backpropagates each before asking
for the next: a module's graph is freed before the next module runs, so a step holds one
module's activations at a time, whatever the schedule. Each phase names the parameters its
optimizer owns; its optimizer and scheduler are created when it starts and dropped when it
ends, so in the sequential schedule only one module's optimizer state ever exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.choices import METHODS, SCHEDULES
from model.entropy import mutual_information, representation_entropy
from model.losses import mask_loss, module_loss
from model.network import NetConfig, SignNet


@dataclass(frozen=True)
class LossSettings:
    lambda_mask: float = 1.0
    beta: float = 0.01
    alpha: float = 1.01
    reg: str = "entropy"
    pool_to: int | None = 4
    label_smoothing: float = 0.1
    # InfoPro's information-preserving term for greedy modules: weight of the error of
    # rebuilding the input image (shrunk to `recon_size`) from T_k. 0: off.
    lambda_recon: float = 0.0
    recon_size: int = 32


@dataclass
class LocalLoss:
    """One loss of a step, with the class and mask logits it scored: backpropagated on its
    own. `terms` holds ce, mask, reg and total."""

    terms: dict[str, Tensor]
    class_logits: Tensor
    mask_logits: Tensor


# A step maps a batch (images, masks, labels, mask_known) to its local losses, in order; the
# last one's class logits are those the trainer scores its training accuracy by (module k's
# aux classifier in greedy module k's phase, the classification head in SGD's). A module's
# step also takes `prefix=T_{k-1}` when the trainer has it stored (model/prefix_cache.py).
Step = Callable[..., Iterator[LocalLoss]]


# The simultaneous schedule's one phase: every module, every batch.
SIMULTANEOUS_PHASE = "modules"
# The sequential schedule's last phase: the decoder and heads on the frozen encoder.
HEADS_PHASE = "heads"
# The aux heads alone, on the frozen encoder, before a fine-tune's modules train.
AUX_WARMUP_PHASE = "aux-heads"


@dataclass
class Phase:
    """One stretch of training with its own optimizer: a Greedy-DIB module, the heads, all
    modules at once, or SGD.

    `stage` is k for a single module's phase (whose auxiliary heads then score it), None
    otherwise. `trainable` are the modules whose parameters the optimizer owns; `reads` every
    module whose weights the forward pass uses (the frozen prefix too); `frozen` is how many
    encoder stages are frozen meanwhile, with their aux heads unless `trainable` holds them;
    `epochs` how long the phase trains.
    """

    name: str
    stage: int | None
    frozen: int
    trainable: list[nn.Module]
    step: Step
    epochs: int = 1
    reads: list[nn.Module] = field(default_factory=list)

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trainable:
            yield from module.parameters()

    def parameters_read(self) -> list[nn.Parameter]:
        """Every distinct parameter the forward pass reads (shared modules counted once)."""
        unique = {id(p): p for module in self.reads or self.trainable for p in module.parameters()}
        return list(unique.values())


def enter_phase(model: SignNet, phase: Phase) -> None:
    """Freeze what `phase` does not train and put the rest in training mode: the frozen stages
    (BatchNorm in eval) and their aux heads, except heads the phase trains itself."""
    model.freeze_stages(phase.frozen)
    model.train()
    for module in phase.trainable:
        module.requires_grad_(True).train()


def information_term(losses: LossSettings, t_in: Tensor, t_out: Tensor) -> Tensor | None:
    """β's partner: H_α(T_k), I_α(T_{k-1}; T_k), or nothing."""
    if losses.reg == "entropy":
        return representation_entropy(t_out, losses.alpha, pool_to=losses.pool_to)
    if losses.reg == "mi":
        return mutual_information(t_in, t_out, losses.alpha, pool_to=losses.pool_to)
    return None


def supervised_loss(
    losses: LossSettings,
    class_logits: Tensor,
    mask_logits: Tensor,
    labels: Tensor,
    masks: Tensor,
    mask_known: Tensor,
    reg: Tensor | None = None,
) -> dict[str, Tensor]:
    return module_loss(
        class_logits,
        mask_logits,
        labels,
        masks,
        reg,
        mask_known,
        lambda_mask=losses.lambda_mask,
        beta=losses.beta if reg is not None else 0.0,
        label_smoothing=losses.label_smoothing,
    )


def _module_loss(
    model: SignNet, k: int, losses: LossSettings, t_in: Tensor, t_k: Tensor, batch
) -> LocalLoss:
    """L_k of module k from its input T_{k-1} and output T_k."""
    images, masks, labels, mask_known = batch
    class_logits, mask_logits = model.aux_forward(k, t_k, images.shape[-2:])
    reg = information_term(losses, t_in, t_k)
    terms = supervised_loss(losses, class_logits, mask_logits, labels, masks, mask_known, reg)
    if losses.lambda_recon > 0:
        side = min(losses.recon_size, images.shape[-1])
        target = F.adaptive_avg_pool2d(images, side)
        recon = F.mse_loss(model.aux_reconstruction(k, t_k, (side, side)), target)
        terms["recon"] = recon
        terms["total"] = terms["total"] + losses.lambda_recon * recon
    return LocalLoss(terms, class_logits, mask_logits)


def _decoder_loss(
    model: SignNet, losses: LossSettings, features: list[Tensor], class_logits: Tensor, batch
) -> LocalLoss:
    """The segmentation decoder's loss on encoder features it cannot send gradient into;
    `class_logits` (the classification head's, already trained) are only reported."""
    images, masks, _labels, mask_known = batch
    mask_logits = model.segment(features, images.shape[-2:])
    seg = mask_loss(mask_logits, masks, mask_known)
    zero = torch.zeros((), device=seg.device)
    terms = {"ce": zero, "mask": seg, "reg": zero, "total": losses.lambda_mask * seg}
    return LocalLoss(terms, class_logits, mask_logits)


def module_step(model: SignNet, k: int, losses: LossSettings) -> Step:
    """Greedy-DIB module k: the frozen prefix gives T_{k-1} without a graph; only module k
    and its aux heads see gradients."""

    def step(*batch: Tensor, prefix: Tensor | None = None) -> Iterator[LocalLoss]:
        t_in = model.stage_input(k, batch[0]) if prefix is None else prefix
        yield _module_loss(model, k, losses, t_in, model.stages[k](t_in), batch)

    return step


def heads_step(model: SignNet, losses: LossSettings) -> Step:
    """The segmentation decoder on the frozen encoder's features."""

    def step(*batch: Tensor) -> Iterator[LocalLoss]:
        with torch.no_grad():
            features = model.encode(batch[0])
            class_logits = model.cls_head(features[-1])
        yield _decoder_loss(model, losses, features, class_logits, batch)

    return step


def aux_heads_step(model: SignNet, losses: LossSettings) -> Step:
    """Every module's aux heads on its frozen output T_k. T_k does not change, so its
    information term is a constant and is left out."""
    supervised = replace(losses, reg="none")

    def step(*batch: Tensor) -> Iterator[LocalLoss]:
        t = batch[0]
        for k in range(model.num_stages):
            t_in = t
            with torch.no_grad():
                t, _taps = model.forward_stage(k, t_in)
            yield _module_loss(model, k, supervised, t_in, t, batch)

    return step


def simultaneous_step(model: SignNet, losses: LossSettings) -> Step:
    """Every module on every batch, each from the detached output of the one below, then the
    decoder from the detached multi-scale features."""

    def step(*batch: Tensor) -> Iterator[LocalLoss]:
        t = batch[0]
        features: list[Tensor] = []
        for k in range(model.num_stages):
            t_in = t.detach()
            t, taps = model.forward_stage(k, t_in)
            features += [tap.detach() for tap in taps]
            local = _module_loss(model, k, losses, t_in, t, batch)
            yield local  # backpropagated (and module k's graph freed) before module k + 1 runs
        yield _decoder_loss(model, losses, features, local.class_logits.detach(), batch)

    return step


def end_to_end_step(model: SignNet, losses: LossSettings) -> Step:
    def step(*batch: Tensor) -> Iterator[LocalLoss]:
        images, masks, labels, mask_known = batch
        class_logits, mask_logits = model(images)
        terms = supervised_loss(losses, class_logits, mask_logits, labels, masks, mask_known)
        yield LocalLoss(terms, class_logits, mask_logits)

    return step


def network_for(method: str, config: NetConfig, cls_head: str | None = None) -> SignNet:
    """The SignNet that `method` trains: greedy methods with aux heads, whose last classifier
    is the classification head; end-to-end SGD with the linear head, which it trains best, or
    with `cls_head` (that of the model it fine-tunes, so that every weight fits)."""
    if method == "sgd":
        return SignNet(replace(config, cls_head=cls_head or "linear"), with_aux=False)
    if cls_head not in (None, "aux"):
        raise ValueError(
            f"a greedy method's classification head is the last aux head, not {cls_head}"
        )
    return SignNet(replace(config, cls_head="aux"), with_aux=True)


def build_phases(
    model: SignNet,
    method: str,
    losses: LossSettings,
    epochs: int = 1,
    head_epochs: int | None = None,
    schedule: str = "sequential",
    aux_warmup_epochs: int = 0,
) -> list[Phase]:
    """The phases of `method`, in training order: `epochs` for SGD, for each greedy module
    and for the simultaneous phase; `head_epochs` (default `epochs`) for the sequential
    schedule's segmentation-decoder phase; first, with `aux_warmup_epochs`, the aux heads
    alone (greedy methods)."""
    if method == "sgd":
        if aux_warmup_epochs:
            raise ValueError("end-to-end SGD has no aux heads to warm up")
        return [Phase("sgd", None, 0, [model], end_to_end_step(model, losses), epochs)]
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    assert model.aux_cls is not None and model.aux_mask is not None, "greedy needs aux heads"
    K = model.num_stages
    decoder = [model.seg_decoder, model.seg_head]
    phases = [aux_warmup_phase(model, losses, aux_warmup_epochs)] if aux_warmup_epochs else []
    if schedule == "simultaneous":
        everything = [model.stages, model.aux_cls, model.aux_mask, model.aux_recon, *decoder]
        step = simultaneous_step(model, losses)
        phases.append(
            Phase(SIMULTANEOUS_PHASE, None, 0, everything, step, epochs, reads=everything)
        )
        return phases
    phases += [
        Phase(
            f"module{k + 1}",
            k,
            k,
            [model.stages[k], model.aux_cls[k], model.aux_mask[k], model.aux_recon[k]],
            module_step(model, k, losses),
            epochs,
            reads=[*model.stages[: k + 1], model.aux_cls[k], model.aux_mask[k], model.aux_recon[k]],
        )
        for k in range(K)
    ]
    reads = [model.stages, model.cls_head, *decoder]
    phases.append(
        Phase(
            HEADS_PHASE,
            None,
            K,
            decoder,
            heads_step(model, losses),
            epochs if head_epochs is None else head_epochs,
            reads,
        )
    )
    return phases


def aux_warmup_phase(model: SignNet, losses: LossSettings, epochs: int) -> Phase:
    """Every aux head but the classification head (aux_cls[K-1], an inference weight that a
    model file keeps) on the frozen encoder."""
    assert model.aux_cls is not None and model.aux_mask is not None and model.aux_recon is not None
    heads = [
        head
        for head in (*model.aux_cls, *model.aux_mask, *model.aux_recon)
        if head is not model.cls_head
    ]
    reads = [model.stages, model.cls_head, *heads]
    step = aux_heads_step(model, losses)
    return Phase(AUX_WARMUP_PHASE, None, model.num_stages, heads, step, epochs, reads=reads)


def first_layer_weights(model: SignNet) -> list[nn.Parameter]:
    """The first convolution weight of each stage: whose gradient norm shows whether the
    training signal reaches the bottom of each module (vanishing gradients)."""
    return [next(p for p in stage.parameters() if p.ndim == 4) for stage in model.stages]
