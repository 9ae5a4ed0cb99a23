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

Each phase names the parameters its optimizer owns; its optimizer and scheduler are created
when it starts and dropped when it ends, so only one module's optimizer state ever exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from model.entropy import mutual_information, representation_entropy
from model.losses import module_loss
from model.network import NetConfig, SignNet
from model.options import METHODS


@dataclass(frozen=True)
class LossSettings:
    lambda_mask: float = 1.0
    beta: float = 0.01
    alpha: float = 1.01
    reg: str = "entropy"
    pool_to: int | None = 4
    label_smoothing: float = 0.1


# A phase step maps a batch to (loss terms, class logits, mask logits).
Step = Callable[[Tensor, Tensor, Tensor], tuple[dict[str, Tensor], Tensor, Tensor]]


@dataclass
class Phase:
    """One stretch of training with its own optimizer: a Greedy-DIB module, the heads, or SGD.

    `stage` is k for module phases, None otherwise. `trainable` are the modules whose
    parameters the optimizer owns; `frozen` is how many encoder stages are frozen meanwhile.
    """

    name: str
    stage: int | None
    frozen: int
    trainable: list[nn.Module]
    step: Step

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trainable:
            yield from module.parameters()


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
    reg: Tensor | None = None,
) -> dict[str, Tensor]:
    return module_loss(
        class_logits,
        mask_logits,
        labels,
        masks,
        reg,
        lambda_mask=losses.lambda_mask,
        beta=losses.beta if reg is not None else 0.0,
        label_smoothing=losses.label_smoothing,
    )


def module_step(model: SignNet, k: int, losses: LossSettings) -> Step:
    """Greedy-DIB module k: the frozen prefix gives T_{k-1} without a graph; only module k
    and its aux heads see gradients."""

    def step(images: Tensor, masks: Tensor, labels: Tensor):
        t_in = model.stage_input(k, images)
        t_k = model.stages[k](t_in)
        class_logits, mask_logits = model.aux_forward(k, t_k, images.shape[-2:])
        reg = information_term(losses, t_in, t_k)
        terms = supervised_loss(losses, class_logits, mask_logits, labels, masks, reg)
        return terms, class_logits, mask_logits

    return step


def heads_step(model: SignNet, losses: LossSettings) -> Step:
    """The segmentation decoder on the frozen encoder's features. The classification head
    was trained with the last module; its loss is still reported, but adds no gradient."""

    def step(images: Tensor, masks: Tensor, labels: Tensor):
        with torch.no_grad():
            features = model.encode(images)
            class_logits = model.cls_head(features[-1])
        mask_logits = model.segment(features, images.shape[-2:])
        terms = supervised_loss(losses, class_logits, mask_logits, labels, masks)
        return terms, class_logits, mask_logits

    return step


def end_to_end_step(model: SignNet, losses: LossSettings) -> Step:
    def step(images: Tensor, masks: Tensor, labels: Tensor):
        class_logits, mask_logits = model(images)
        terms = supervised_loss(losses, class_logits, mask_logits, labels, masks)
        return terms, class_logits, mask_logits

    return step


def network_for(method: str, config: NetConfig) -> SignNet:
    """The SignNet that `method` trains: greedy methods with aux heads, whose last classifier
    is the classification head; end-to-end SGD with the linear head, which it trains best."""
    if method == "sgd":
        return SignNet(replace(config, cls_head="linear"), with_aux=False)
    return SignNet(replace(config, cls_head="aux"), with_aux=True)


def build_phases(model: SignNet, method: str, losses: LossSettings) -> list[Phase]:
    """The phases of `method`, in training order."""
    if method == "sgd":
        return [Phase("sgd", None, 0, [model], end_to_end_step(model, losses))]
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    assert model.aux_cls is not None and model.aux_mask is not None, "greedy needs aux heads"
    K = model.num_stages
    phases = [
        Phase(
            f"module{k + 1}",
            k,
            k,
            [model.stages[k], model.aux_cls[k], model.aux_mask[k]],
            module_step(model, k, losses),
        )
        for k in range(K)
    ]
    heads = [model.seg_decoder, model.seg_head]
    phases.append(Phase("heads", None, K, heads, heads_step(model, losses)))
    return phases


def first_layer_weights(model: SignNet) -> list[nn.Parameter]:
    """The first convolution weight of each stage: whose gradient norm shows whether the
    training signal reaches the bottom of each module (vanishing gradients)."""
    return [next(p for p in stage.parameters() if p.ndim == 4) for stage in model.stages]
