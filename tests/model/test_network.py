import dataclasses

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torchvision.models import resnet18, resnet34

from model.entropy import representation_entropy
from model.network import (
    NetConfig,
    SignNet,
    activation_elements,
    encoder_units,
    parameter_counts,
)
from model.splits import SPLITS, resolve_split, tap_units, unit_names

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def net() -> SignNet:
    torch.manual_seed(0)
    return SignNet(NetConfig(num_classes=NUM_CLASSES))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64)


def batch_norms(module: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


# --- splits -------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "name"), list(SPLITS))
def test_every_named_split_covers_every_unit_once_in_order(arch, name):
    groups = resolve_split(arch, name)
    assert [unit for group in groups for unit in group] == unit_names(arch)


def test_spec_string_joins_with_plus_and_expands_layer_names():
    assert resolve_split("resnet18", "stem+layer1.0, layer1.1+layer2,layer3+layer4") == [
        ["stem", "layer1.0"],
        ["layer1.1", "layer2.0", "layer2.1"],
        ["layer3.0", "layer3.1", "layer4.0", "layer4.1"],
    ]
    assert resolve_split("resnet18") == resolve_split(
        "resnet18", "stem,layer1,layer2+layer3,layer4"
    )


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("stem,layer1,layer2,layer3", "leaves out layer4.0, layer4.1"),
        ("stem,layer1,layer1.1,layer2,layer3+layer4", "lists layer1.1 more than once"),
        ("stem,layer2,layer1,layer3,layer4", "out of network order; the order is stem, layer1.0"),
        ("stem,,layer1,layer2,layer3,layer4", "empty module"),
        (
            "stem,layer1,layer2,layer5",
            "Named splits for resnet18: balanced, layers, k3, k2, lean, blocks",
        ),
        ("stem,layer1,layer2,layer3.2+layer4", "Units: stem, layer1.0, layer1.1"),
    ],
)
def test_invalid_splits_are_refused_naming_what_is_valid(split, message):
    with pytest.raises(ValueError, match=message):
        NetConfig(split=split)


def test_unknown_arch_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: resnet18, resnet34"):
        NetConfig(arch="resnet50")


@pytest.mark.parametrize(("arch", "build"), [("resnet18", resnet18), ("resnet34", resnet34)])
def test_unit_names_match_the_torchvision_blocks(arch, build):
    assert [name for name, _ in encoder_units(build(weights=None))] == unit_names(arch)


def test_units_reproduce_the_smp_encoder_features():
    resnet = resnet18(weights=None).eval()
    smp_encoder = get_encoder("resnet18", weights=None).eval()
    smp_encoder.load_state_dict(
        {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    )
    x = torch.randn(2, 3, 64, 64)
    taps, features = set(tap_units("resnet18")), []
    with torch.no_grad():
        expected = smp_encoder(x)[1:]
        for name, unit in encoder_units(resnet):
            x = unit(x)
            if name in taps:
                features.append(x)
    assert len(features) == len(expected) == 5
    for ours, theirs in zip(features, expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_activation_elements_match_closed_forms():
    counts = activation_elements("resnet18", 64)
    # conv1, bn1 and relu each output 64 channels at 32x32.
    assert counts["stem"] == 3 * 64 * 32 * 32
    assert activation_elements("resnet18", 128) == {k: 4 * v for k, v in counts.items()}
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in fc.
    assert sum(parameter_counts("resnet18").values()) == 11_689_512 - 513_000


# --- network --------------------------------------------------------------------------------


def test_multi_scale_features_have_resnet_strides_and_channels(net, images):
    features = net.encode(images)
    assert [tuple(f.shape[1:]) for f in features] == [
        (64, 32, 32),
        (64, 16, 16),
        (128, 8, 8),
        (256, 4, 4),
        (512, 2, 2),
    ]
    assert net.feature_channels == [64, 64, 128, 256, 512]
    assert net.stage_channels == [64, 64, 256, 512]
    assert net.stage_units[2] == ["layer2.0", "layer2.1", "layer3.0", "layer3.1"]


def test_stages_chain_to_the_encoder_and_forward_to_the_heads(net, images):
    net.eval()
    with torch.no_grad():
        t, features = images, []
        for k in range(net.num_stages):
            assert torch.equal(net.stages[k](t), net.forward_stage(k, t)[0])
            t, taps = net.forward_stage(k, t)
            features += taps
        for ours, encoded in zip(features, net.encode(images), strict=True):
            torch.testing.assert_close(ours, encoded)
        class_logits, mask_logits = net(images)
        torch.testing.assert_close(class_logits, net.heads(features, (64, 64))[0])
        torch.testing.assert_close(mask_logits, net.heads(features, (64, 64))[1])


@pytest.mark.parametrize(
    ("arch", "size"), [("resnet18", (64, 64)), ("resnet34", (64, 64)), ("resnet18", (45, 61))]
)
def test_forward_gives_class_logits_and_a_full_resolution_mask(arch, size):
    net = SignNet(NetConfig(arch=arch, num_classes=NUM_CLASSES))
    class_logits, mask_logits = net(torch.randn(2, 3, *size))
    assert class_logits.shape == (2, NUM_CLASSES)
    assert mask_logits.shape == (2, 1, *size)


def test_aux_heads_give_class_logits_and_a_mask_for_every_module(net, images):
    for k in range(net.num_stages):
        t = net.stages[k](net.stage_input(k, images))
        class_logits, mask_logits = net.aux_forward(k, t, images.shape[-2:])
        assert class_logits.shape == (2, NUM_CLASSES)
        assert mask_logits.shape == (2, 1, 64, 64)


def test_frozen_stages_stay_in_eval_through_train_and_take_no_gradient():
    net = SignNet(NetConfig(num_classes=NUM_CLASSES))
    net.freeze_stages(2)
    net.train()
    for k, stage in enumerate(net.stages):
        frozen = k < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(bn.training != frozen for bn in batch_norms(stage))
    net.unfreeze_all()
    assert all(p.requires_grad for p in net.parameters())
    assert all(bn.training for bn in batch_norms(net))
    net.eval()
    assert not any(bn.training for bn in batch_norms(net))


def test_stage_loss_reaches_only_module_k_and_its_aux_heads(images):
    net = SignNet(NetConfig(num_classes=NUM_CLASSES))
    k = 2
    net.freeze_stages(k)
    net.train()
    prefix_stats = [bn.running_mean.clone() for bn in batch_norms(net.stages[:k])]

    t_in = net.stage_input(k, images)
    t = net.stages[k](t_in)
    class_logits, mask_logits = net.aux_forward(k, t, images.shape[-2:])
    loss = (
        F.cross_entropy(class_logits, torch.tensor([0, 1]))
        + F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits))
        + 0.1 * representation_entropy(t, pool_to=4)
    )
    loss.backward()

    assert t_in.grad_fn is None
    assert all(p.grad is None for p in net.stages[:k].parameters())
    for module in (net.stages[k], net.aux_cls[k], net.aux_mask[k]):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert all(p.grad is None for p in net.stages[k + 1 :].parameters())
    for before, bn in zip(prefix_stats, batch_norms(net.stages[:k]), strict=True):
        assert torch.equal(before, bn.running_mean)


def test_stage_input_runs_the_prefix_without_autograd(net, images):
    grad_enabled = []
    hook = net.stages[0].register_forward_hook(
        lambda *_: grad_enabled.append(torch.is_grad_enabled())
    )
    try:
        t_in = net.stage_input(3, images)
        net.stages[0](images)
    finally:
        hook.remove()
    assert grad_enabled == [False, True]
    assert t_in.grad_fn is None


def test_inference_weights_load_strictly_without_aux_heads_and_match(net, images):
    state = net.inference_state_dict()
    assert not any(name.startswith(("aux_cls.", "aux_mask.")) for name in state)
    inference_net = SignNet(net.config, with_aux=False)
    inference_net.load_state_dict(state, strict=True)
    net.eval()
    inference_net.eval()
    with torch.no_grad():
        for ours, theirs in zip(net(images), inference_net(images), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="with_aux=False"):
        inference_net.aux_forward(0, images, (64, 64))


def test_config_round_trips_through_a_plain_dict():
    config = NetConfig(arch="resnet34", split="k2", decoder_channels=[64, 32, 16, 16, 8])
    stored = dataclasses.asdict(config)
    stored["decoder_channels"] = list(stored["decoder_channels"])  # as JSON gives it back
    assert NetConfig(**stored) == config
    assert config.decoder_channels == (64, 32, 16, 16, 8)


def test_freeze_refuses_an_out_of_range_module_count(net):
    with pytest.raises(ValueError, match="k must be in 0..4"):
        net.freeze_stages(5)
