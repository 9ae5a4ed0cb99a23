"""The trainers: what greedy training freezes, what reaches which module, and resumption."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch

from data.frames import split_frames
from model.checkpoint import load_file, load_model
from model.device import memory_format_for
from model.greedy import LossSettings, build_phases, enter_phase, network_for
from model.inference import Predictor
from model.network import NetConfig, SignNet
from model.options import get_args_parser
from model.runs import latest_run
from model.train import load_data, main, make_optimizer, train_one_epoch

SIZE = 32


def _batch(n=8, classes=58):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    masks = torch.zeros(n, 1, SIZE, SIZE)
    masks[:, :, 8:24, 8:24] = 1
    labels = torch.randint(0, classes, (n,), generator=generator)
    mask_known = torch.ones(n, dtype=torch.bool)
    return images, masks, labels, mask_known


def _greedy_phases(reg="entropy"):
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=SIZE))
    return model, build_phases(model, "greedy-dib", LossSettings(reg=reg, beta=0.1))


def _train_steps(model, phase, steps=5, lr=0.05):
    enter_phase(model, phase)
    optimizer = torch.optim.SGD(list(phase.parameters()), lr=lr, momentum=0.9)
    batch = _batch()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        total = 0.0
        for local in phase.step(*batch):
            local.terms["total"].backward()
            total += local.terms["total"].item()
        optimizer.step()
        losses.append(total)
    return losses


@pytest.mark.parametrize("reg", ["entropy", "mi", "none"])
def test_training_module_k_leaves_the_frozen_prefix_untouched(reg):
    model, phases = _greedy_phases(reg)
    k = 2
    prefix = {name: value.clone() for name, value in model.stages[:k].state_dict().items()}
    _train_steps(model, phases[k], steps=2)
    # Weights and BatchNorm running statistics alike: the prefix ran in eval mode, no_grad.
    after = model.stages[:k].state_dict()
    assert all(torch.equal(prefix[name], after[name]) for name in prefix)
    assert all(p.grad is None for p in model.stages[:k].parameters())
    assert all(not p.requires_grad for p in model.stages[:k].parameters())
    assert all(not m.training for stage in model.stages[:k] for m in stage.modules())
    # Module k itself did learn.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stages[k].parameters())


def test_no_gradient_crosses_the_module_boundary():
    model, phases = _greedy_phases()
    k = 1
    model.freeze_stages(k)
    (local,) = phases[k].step(*_batch())
    local.terms["total"].backward()
    # Neither earlier nor later modules, nor the final heads, see a gradient.
    untouched = [model.stages[0], *model.stages[k + 1 :], model.cls_head, model.seg_decoder]
    assert all(p.grad is None for m in untouched for p in m.parameters())


def test_heads_phase_trains_only_the_segmentation_decoder():
    model, phases = _greedy_phases()
    heads = phases[-1]
    assert heads.name == "heads" and heads.frozen == model.num_stages
    # The classification head is the last module's auxiliary classifier, trained with it.
    assert model.cls_head is model.aux_cls[-1]
    fixed = [model.stages, model.cls_head]
    before = [{n: v.clone() for n, v in part.state_dict().items()} for part in fixed]
    decoder_before = [p.clone() for p in model.seg_decoder.parameters()]
    _train_steps(model, heads, steps=2)
    # Weights and BatchNorm statistics of the encoder and the classifier stay put.
    for part, saved in zip(fixed, before, strict=True):
        assert all(torch.equal(saved[n], v) for n, v in part.state_dict().items())
        assert all(p.grad is None for p in part.parameters())
    decoder_after = model.seg_decoder.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, decoder_after, strict=True))


@pytest.mark.parametrize("schedule", ["sequential", "simultaneous"])
def test_aux_warmup_trains_the_aux_heads_alone_on_the_frozen_network(schedule):
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=SIZE))
    phases = build_phases(
        model, "greedy-dib", LossSettings(), schedule=schedule, aux_warmup_epochs=1
    )
    warmup = phases[0]
    assert warmup.name == "aux-heads" and phases[1].name in ("module1", "modules")
    heads = [*model.aux_cls[:-1], *model.aux_mask]
    fixed = [model.stages, model.cls_head, model.seg_decoder, model.seg_head]
    before = [{n: v.clone() for n, v in part.state_dict().items()} for part in fixed]
    heads_before = [{n: v.clone() for n, v in head.state_dict().items()} for head in heads]
    _train_steps(model, warmup, steps=2)
    assert all(head.training for head in heads)
    # The encoder (weights and BatchNorm statistics), the classification head a model file
    # keeps, and the decoder stay put; every fresh aux head learned.
    for part, saved in zip(fixed, before, strict=True):
        assert all(torch.equal(saved[n], v) for n, v in part.state_dict().items())
        assert all(p.grad is None for p in part.parameters())
    for head, saved in zip(heads, heads_before, strict=True):
        assert any(not torch.equal(saved[n], v) for n, v in head.state_dict().items())
    # The next phase trains its module again.
    enter_phase(model, phases[1])
    assert all(p.requires_grad for p in model.stages[0].parameters())
    assert model.stages[0].training


def test_fine_tune_from_a_model_file_warms_its_aux_heads_up_first(
    tiny_synthetic, tmp_path, monkeypatch
):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    simultaneous = ("--schedule", "simultaneous")
    main(_args(tiny_synthetic, tmp_path / "start", *simultaneous))
    start = load_file(tmp_path / "start" / "model.pt")["model"]
    tuned = tmp_path / "tuned"
    init = ("--init", str(tmp_path / "start" / "model.pt"), "--aux-warmup-epochs", "1")
    main(_args(tiny_synthetic, tuned, *simultaneous, *init, "--stop-after", "aux-heads"))
    # After the warm-up, every inference weight is still the start's.
    warmed = load_file(tuned / "checkpoint.pth")["model"]
    assert all(torch.equal(warmed[name].half(), value) for name, value in start.items())
    main(_args(tiny_synthetic, tuned, *simultaneous, *init, "--resume"))
    with open(tuned / "history.csv") as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["aux-heads", "modules"]
    # In one run, the modules' phase follows the warm-up's frozen network and still trains
    # every stage and the classification head (its optimizer owns them).
    main(_args(tiny_synthetic, tmp_path / "once", *simultaneous, *init))
    once = load_file(tmp_path / "once" / "model.pt")["model"]
    for prefix in ("stages.0.", "stages.3.", "cls_head."):
        weights = [n for n in start if n.startswith(prefix) and n.endswith(".weight")]
        assert weights and all(not torch.equal(once[n], start[n]) for n in weights), prefix


def test_sgd_fine_tunes_a_greedy_model_with_its_head_and_greedy_refuses_an_sgd_one(
    tiny_synthetic, tmp_path, monkeypatch
):
    from model.checkpoint import ModelInfo, export_model

    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    files = {}
    for method in ("greedy-dib", "sgd"):
        network = network_for(method, NetConfig(image_size=SIZE, num_classes=60))
        info = ModelInfo(config=network.config, class_names=["a"] * 60)
        files[method] = export_model(network, info, tmp_path / f"{method}.pt")
    tuned = tmp_path / "tuned"
    main(_args(tiny_synthetic, tuned, "--method", "sgd", "--init", str(files["greedy-dib"])))
    _, info = load_model(tuned / "model.pt")
    assert info.method == "sgd" and info.config.cls_head == "aux"
    with pytest.raises(SystemExit, match="--method sgd"):
        main(_args(tiny_synthetic, tmp_path / "x", "--init", str(files["sgd"])))


def test_a_fine_tune_keeps_the_module_cut_of_the_model_it_starts_from(
    tiny_synthetic, tmp_path, monkeypatch
):
    """The shipped sign model is cut "lean"; its weights fit no other cut."""
    from model.checkpoint import ModelInfo, export_model

    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    network = network_for("greedy-dib", NetConfig(image_size=SIZE, num_classes=60, split="lean"))
    start = export_model(
        network, ModelInfo(config=network.config, class_names=["a"] * 60), tmp_path / "lean.pt"
    )
    main(_args(tiny_synthetic, tmp_path / "tuned", "--method", "sgd", "--init", str(start)))
    _, info = load_model(tmp_path / "tuned" / "model.pt")
    assert info.config.split == "lean"
    given = ("--method", "sgd", "--init", str(start), "--modules", "balanced")
    with pytest.raises(SystemExit, match="cut into modules as 'lean', this run as 'balanced'"):
        main(_args(tiny_synthetic, tmp_path / "other", *given))


def test_aux_warmup_is_for_a_greedy_fine_tune(tiny_synthetic, tmp_path):
    model = network_for("sgd", NetConfig(image_size=SIZE))
    with pytest.raises(ValueError, match="no aux heads"):
        build_phases(model, "sgd", LossSettings(), aux_warmup_epochs=1)
    with pytest.raises(SystemExit, match="--init"):
        main(_args(tiny_synthetic, tmp_path / "x", "--aux-warmup-epochs", "1"))


@pytest.mark.parametrize(
    ("method", "schedule", "lr"),
    [("greedy-dib", "sequential", 0.05), ("greedy-dib", "simultaneous", 0.05), ("sgd", "", 0.01)],
)
def test_loss_falls_on_a_fixed_batch(method, schedule, lr):
    torch.manual_seed(0)
    model = network_for(method, NetConfig(image_size=SIZE))
    phase = build_phases(model, method, LossSettings(), schedule=schedule or "sequential")[0]
    losses = _train_steps(model, phase, steps=15, lr=lr)
    assert min(losses[-3:]) < 0.75 * losses[0]


def test_simultaneous_schedule_keeps_every_gradient_inside_its_module():
    """Each local loss of the simultaneous step reaches only its own module (and heads): the
    same greedy rule as the sequential schedule, on every batch."""
    torch.manual_seed(0)
    model = network_for("greedy-dib", NetConfig(image_size=SIZE))
    (phase,) = build_phases(model, "greedy-dib", LossSettings(), schedule="simultaneous")
    assert phase.name == "modules" and phase.frozen == 0
    model.freeze_stages(0)
    model.train()
    parts = [*(list(s.parameters()) for s in model.stages), list(model.seg_decoder.parameters())]
    locals_ = phase.step(*_batch())
    for k in range(model.num_stages + 1):
        local = next(locals_)
        model.zero_grad(set_to_none=True)
        local.terms["total"].backward()
        reached = [any(p.grad is not None for p in part) for part in parts]
        assert reached == [i == k for i in range(len(parts))], f"local loss {k}"
    assert next(locals_, None) is None


def test_cpu_bf16_trains_in_bf16_and_leaves_the_frozen_prefix_and_float32_weights():
    model, phases = _greedy_phases()
    k = 2
    phase = phases[k]
    model.to(memory_format=memory_format_for(torch.device("cpu"), cpu_bf16=True))
    prefix = {name: value.clone() for name, value in model.stages[:k].state_dict().items()}
    trained = {name: value.clone() for name, value in model.stages[k].state_dict().items()}
    output_dtypes = []
    hook = model.stages[k].register_forward_hook(lambda m, i, out: output_dtypes.append(out.dtype))
    optimizer, scheduler = make_optimizer(phase, get_args_parser().parse_args([]), 4, 1)
    images, masks, labels, mask_known = _batch()
    batch = (images, masks, labels, torch.zeros(len(images), 4), mask_known)
    step = (model, phase, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False))
    stats = train_one_epoch(*step, [batch] * 4, torch.device("cpu"), "bf16", cpu_bf16=True)
    hook.remove()
    assert output_dtypes and set(output_dtypes) == {torch.bfloat16}  # the module ran in bf16
    assert math.isfinite(stats["train_total"])
    for name, value in model.stages[:k].state_dict().items():
        assert torch.equal(value, prefix[name]), f"frozen {name} moved"
    moved = [n for n, v in model.stages[k].state_dict().items() if not torch.equal(v, trained[n])]
    assert moved, "the trained module did not learn"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_learning_rate_warms_up_linearly_then_decays_to_zero(optimizer):
    """10 steps an epoch, 5 epochs, 1.5 epochs of warm-up: 15 steps up to --lr, then a
    cosine over the other 35 toward zero."""
    layer = torch.nn.Linear(2, 2)
    args = get_args_parser().parse_args(
        ["--optimizer", optimizer, "--lr", "0.1", "--warmup-epochs", "1.5"]
    )
    optimizer, scheduler = make_optimizer(layer, args, 10, 5)
    rates = []
    for _ in range(50):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1 / 15) and rates[14] == pytest.approx(0.1)
    assert rates[:15] == sorted(rates[:15]) and rates[15:] == sorted(rates[15:], reverse=True)
    assert rates[15] == pytest.approx(0.1)
    assert rates[15 + 35 // 2] == pytest.approx(0.05, rel=0.1)  # half-way down the cosine
    assert rates[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 34 / 35)))

    no_warm_up = get_args_parser().parse_args(["--lr", "0.1", "--warmup-epochs", "0"])
    _, scheduler = make_optimizer(layer, no_warm_up, 10, 5)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1)  # the peak from the first step


def test_sgd_with_momentum_0_is_plain_sgd():
    """--momentum takes [0, 1); torch refuses Nesterov without momentum, after the data had
    loaded."""
    layer = torch.nn.Linear(2, 2)
    for momentum, nesterov in (("0", False), ("0.9", True)):
        args = get_args_parser().parse_args(["--optimizer", "sgd", "--momentum", momentum])
        optimizer, _ = make_optimizer(layer, args, 1, 1)
        assert optimizer.param_groups[0]["nesterov"] is nesterov


def _args(data, out, *extra):
    parser = get_args_parser()
    return parser.parse_args(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--image-size",
            str(SIZE),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--workers",
            "0",
            *extra,
        ]
    )


def test_interrupted_run_resumes_after_module_2_and_finishes(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "run"
    assert main(_args(tiny_synthetic, out, "--stop-after", "module2")) == {}
    checkpoint = load_file(out / "checkpoint.pth")
    assert (checkpoint["phase"], checkpoint["epoch"]) == (2, 0)  # next: module3, epoch 0
    assert not (out / "model.pt").exists()
    stage0 = checkpoint["model"]["stages.0.stem.0.weight"]

    metrics = main(_args(tiny_synthetic, out, "--resume"))
    assert 0 <= metrics["accuracy"] <= 1 and metrics["images"] > 0
    with open(out / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["phase"] for row in rows] == ["module1", "module2", "module3", "module4", "heads"]
    # Only the module in training gets a gradient; module 2 ran in the same process as module 1.
    gradients = [
        [not math.isnan(float(row[f"grad_norm_{k}"])) for k in (1, 2, 3, 4)] for row in rows
    ]
    assert gradients[:4] == [[k == m for k in range(4)] for m in range(4)]
    assert gradients[4] == [False] * 4
    # The resumed run kept module 1 as trained before the interruption.
    model, info = load_model(out / "model.pt")
    assert torch.allclose(model.stages[0].stem[0].weight, stage0.float(), rtol=1e-3, atol=1e-4)
    assert latest_run(tmp_path) == out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["method"] == "greedy-dib" and info.method == "greedy-dib"
    assert list(saved["modules"]) == ["module1", "module2", "module3", "module4"]
    assert 0 <= saved["modules"]["module1"]["accuracy"] <= 1
    # Synthetic drawings are of the 58 classes alone: the open-set outputs learned nothing.
    assert saved["split"]["open_set_train_images"] == 0 and not info.open_set_trained(58)
    # The open-set threshold chosen on the held-out side is the one the model file answers by.
    assert info.open_set == {"threshold": saved["threshold"]}
    assert Predictor.load(out / "model.pt").threshold == saved["threshold"]
    assert (out / "model.pt").stat().st_mode & 0o777 == 0o644
    for plot in ("curves.png", "gradients.png", "confusion.png"):
        assert (out / plot).stat().st_size > 0

    # The interruption changed nothing: an uninterrupted run ends with the same weights.
    main(_args(tiny_synthetic, tmp_path / "straight"))
    straight = load_file(tmp_path / "straight" / "model.pt")["model"]
    resumed = load_file(out / "model.pt")["model"]
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_resume_refuses_a_missing_or_finished_run(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    with pytest.raises(SystemExit, match="no checkpoint to resume"):
        main(_args(tiny_synthetic, tmp_path / "never", "--resume"))
    main(_args(tiny_synthetic, tmp_path / "done", "--method", "sgd"))
    with pytest.raises(SystemExit, match="finished training"):
        main(_args(tiny_synthetic, tmp_path / "done", "--method", "sgd", "--resume"))


def test_resume_refuses_arguments_that_plan_other_phases(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "run"
    main(_args(tiny_synthetic, out, "--stop-after", "module1"))
    # Phase 1 is module2 here but "heads" in a simultaneous run: that run would skip it.
    with pytest.raises(SystemExit, match=r"module1 \(1 epoch\).*modules \(1 epoch\)"):
        main(_args(tiny_synthetic, out, "--schedule", "simultaneous", "--resume"))
    assert load_file(out / "checkpoint.pth")["phase"] == 1  # nothing was overwritten


def test_resume_refuses_other_data_or_another_network(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "run"
    main(_args(tiny_synthetic, out, "--stop-after", "module1"))
    with pytest.raises(SystemExit, match="another split or other data"):
        main(_args(tiny_synthetic, out, "--seed", "1", "--resume"))
    # Its record would name only the new values.
    with pytest.raises(
        SystemExit, match=r"with --beta 0\.01, --lr 0\.003; .* --beta 1\.0, --lr 0\.1"
    ):
        main(_args(tiny_synthetic, out, "--beta", "1", "--lr", "0.1", "--resume"))
    switched = r"with no --cache-prefix, --warmup-epochs .* --cache-prefix, --warmup-epochs 0\.7"
    with pytest.raises(SystemExit, match=switched):
        main(_args(tiny_synthetic, out, "--cache-prefix", "--warmup-epochs", "0.7", "--resume"))
    with pytest.raises(SystemExit, match="does not fit the network"):
        main(_args(tiny_synthetic, out, "--image-size", str(2 * SIZE), "--resume"))
    sgd = tmp_path / "sgd"
    main(_args(tiny_synthetic, sgd, "--method", "sgd"))
    (sgd / "model.pt").unlink()  # as if stopped after its last epoch, before the model
    with pytest.raises(SystemExit, match="resume with the run's own arguments"):
        main(_args(tiny_synthetic, sgd, "--resume"))  # greedy-dib: no linear head
    assert load_file(out / "checkpoint.pth")["phase"] == 1  # nothing was overwritten


def test_a_run_stopped_after_its_last_phase_is_finished(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "sgd"
    main(_args(tiny_synthetic, out, "--method", "sgd", "--stop-after", "sgd"))
    written = load_file(out / "model.pt")["model"]
    # A run whose last epoch was saved but whose model was not: --resume scores and writes it.
    (out / "model.pt").unlink()
    main(_args(tiny_synthetic, out, "--method", "sgd", "--resume"))
    again = load_file(out / "model.pt")["model"]
    assert all(torch.equal(written[name], again[name]) for name in written)


@pytest.mark.parametrize(
    "bad",
    [
        ["--epochs", "0"],
        ["--head-epochs", "0"],
        ["--batch-size", "0"],
        ["--snapshot-every", "-1"],
        ["--aux-warmup-epochs", "-1"],
        ["--test-fraction", "1"],
        ["--workers", "-2"],
    ],
)
def test_counts_out_of_range_are_refused_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit) as refused:
        get_args_parser().parse_args(bad)
    assert refused.value.code == 2 and "must be" in capsys.readouterr().err


def test_checkpoint_round_trip_gives_identical_outputs(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "sgd"
    main(_args(tiny_synthetic, out, "--method", "sgd"))
    checkpoint = load_file(out / "checkpoint.pth")
    trained = SignNet(NetConfig(**checkpoint["info"]["config"]), with_aux=False)
    trained.load_state_dict(checkpoint["model"])
    trained.eval()
    from_checkpoint, _ = load_model(out / "checkpoint.pth")
    from_export, info = load_model(out / "model.pt")  # float16 weights
    images = _batch(4)[0]
    with torch.no_grad():
        reference = trained(images)
        exact = from_checkpoint(images)
        half = from_export(images)
    assert all(torch.equal(a, b) for a, b in zip(reference, exact, strict=True))
    # float16 storage: the same decisions, logits within float16 rounding.
    assert torch.equal(reference[0].argmax(1), half[0].argmax(1))
    assert (reference[0] - half[0]).abs().max() <= 1e-2 * reference[0].abs().max()
    assert info.class_names[0] == "Speed limit 5 km/h" and info.split["test_images"] > 0


def test_unknown_phase_name_is_refused(tiny_synthetic, tmp_path):
    with pytest.raises(SystemExit, match="module1, module2"):
        main(_args(tiny_synthetic, tmp_path / "x", "--stop-after", "module9"))


def test_regulariser_needs_greedy_dib(tiny_synthetic, tmp_path):
    args = _args(tiny_synthetic, tmp_path / "x", "--method", "sgd", "--reg", "entropy")
    with pytest.raises(SystemExit, match="greedy-dib"):
        main(args)


def test_cli_parser_has_every_knob():
    args = get_args_parser().parse_args([])
    assert isinstance(args, argparse.Namespace)
    for knob in (
        "method",
        "reg",
        "beta",
        "alpha",
        "image_size",
        "epochs",
        "batch_size",
        "data_split",
        "module_split",
        "schedule",
        "task",
        "balance",
        "seed",
        "out",
        "resume",
    ):
        assert hasattr(args, knob)


def test_each_method_gets_its_classification_head():
    config = NetConfig(image_size=SIZE)
    greedy, sgd = network_for("greedy-dib", config), network_for("sgd", config)
    assert greedy.config.cls_head == "aux" and greedy.cls_head is greedy.aux_cls[-1]
    assert sgd.config.cls_head == "linear" and sgd.aux_cls is None
    # The exported inference model of either rebuilds from its config and loads strictly.
    for model in (greedy, sgd):
        SignNet(model.config, with_aux=False).load_state_dict(model.inference_state_dict())


def test_scene_task_trains_the_segmentation_of_whole_frames(tmp_path, monkeypatch):
    from data.scenes import SceneConfig, SceneSources, write_scenes

    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    scenes = tmp_path / "scenes"
    config = SceneConfig(width=256, height=160, min_size=16, max_size=40, signs=(2, 3))
    write_scenes(
        scenes, frames=6, seed=0, config=config, sources=SceneSources(signs=("synthetic",))
    )
    out = tmp_path / "scene-run"
    metrics = main(_args(scenes, out, "--task", "scenes", "--method", "sgd"))
    assert metrics["accuracy"] is None  # a tile has no one class
    with open(out / "history.csv") as handle:
        assert all(row["train_accuracy"] == "" for row in csv.DictReader(handle))
    assert 0 <= metrics["mask_miou"] <= 1
    model, info = load_model(out / "model.pt")
    assert info.task == "scenes" and info.config.seg_channels == 2  # signs and cores
    assert model(torch.zeros(1, 3, 64, 96))[1].shape == (1, 2, 64, 96)
    assert latest_run(tmp_path) is None, "a scene model is not the newest sign reader"

    # Fine-tuning: the run's model as the start, real-frame-like folder beside the scenes.
    split_frames(scenes, tmp_path / "split", test_share=0.5)
    tuned = tmp_path / "tuned"
    parsed = _args(
        scenes, tuned, "--task", "scenes", "--method", "sgd", "--init", str(out / "model.pt")
    )
    parsed.data.append(tmp_path / "split" / "train")
    main(parsed)
    assert load_file(tuned / "model.pt")["split"]["train_images"] >= 7
    with pytest.raises(SystemExit, match="neither --train-data"):
        main(_args(scenes, tmp_path / "x", "--task", "scenes", "--train-data", str(scenes)))


def test_init_loads_every_inference_weight_and_refuses_another_task(tmp_path):
    from model.checkpoint import ModelInfo, export_model
    from model.train import read_init, start_from

    config = NetConfig(image_size=SIZE)
    source = network_for("sgd", config)
    path = export_model(
        source,
        ModelInfo(config=source.config, class_names=["a"] * 60, task="scenes"),
        tmp_path / "m.pt",
    )
    target = network_for("sgd", config)
    start_from(target, read_init(path, "scenes", "resnet18"))
    for name, value in source.inference_state_dict().items():
        assert torch.equal(target.state_dict()[name], value.half().float()), name
    with pytest.raises(SystemExit, match="task scenes, not"):
        start_from(target, read_init(path, "crops", "resnet18"))
    other_classes = network_for("sgd", NetConfig(image_size=SIZE, num_classes=7))
    with pytest.raises(SystemExit, match="do not fit this network"):
        start_from(other_classes, read_init(path, "scenes", "resnet18"))


def test_init_from_a_checkpoint_brings_its_aux_heads_and_a_model_file_does_not(tmp_path):
    from model.checkpoint import CHECKPOINT_FORMAT, ModelInfo, export_model, save_atomic
    from model.network import AUX_PREFIXES
    from model.train import read_init, start_from

    config = NetConfig(image_size=SIZE)
    source = network_for("greedy-dib", config)
    with torch.no_grad():  # aux heads unlike any fresh ones
        for name, value in source.named_parameters():
            if name.startswith(AUX_PREFIXES):
                value.add_(1.0)
    info = ModelInfo(config=source.config, class_names=["a"] * 60, task="scenes")
    checkpoint = save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "model": source.state_dict(),
            "info": {k: v for k, v in info.to_dict().items() if k != "path"},
        },
        tmp_path / "checkpoint.pth",
    )
    model_file = export_model(source, info, tmp_path / "model.pt")
    aux = {k: v.detach() for k, v in source.named_parameters() if k.startswith(AUX_PREFIXES)}
    assert aux

    from_checkpoint = network_for("greedy-dib", config)
    assert start_from(from_checkpoint, read_init(checkpoint, "scenes", "resnet18")) == len(
        {k for k in from_checkpoint.state_dict() if k.startswith(AUX_PREFIXES)}
    )
    for name, value in source.state_dict().items():
        assert torch.equal(from_checkpoint.state_dict()[name], value.float()), name

    from_model_file = network_for("greedy-dib", config)
    assert start_from(from_model_file, read_init(model_file, "scenes", "resnet18")) == 0
    fresh = from_model_file.state_dict()
    assert not any(torch.equal(fresh[k], v) for k, v in aux.items())


def test_init_from_a_scene_model_without_cores_seeds_the_core_map_with_the_sign_map(tmp_path):
    from model.checkpoint import ModelInfo, export_model
    from model.train import read_init, start_from

    source = network_for("sgd", NetConfig(image_size=SIZE))
    path = export_model(
        source,
        ModelInfo(config=source.config, class_names=["a"] * 60, task="scenes"),
        tmp_path / "m.pt",
    )
    target = network_for("sgd", NetConfig(image_size=SIZE, seg_channels=2))
    start_from(target, read_init(path, "scenes", "resnet18"))
    weight, bias = target.seg_head[0].weight, target.seg_head[0].bias
    assert torch.equal(weight[0], weight[1]) and torch.equal(bias[0], bias[1])
    assert torch.equal(weight[:1], source.seg_head[0].weight.half().float())
    decoder = "seg_decoder.blocks.0.conv1.0.weight"
    assert torch.equal(target.state_dict()[decoder], source.state_dict()[decoder].half().float())


def test_scene_folders_share_the_draws_by_the_square_root_of_their_frames():
    from pathlib import Path

    from data.frames import FrameRecord
    from model.train import folder_weights

    def frames(folder, count):
        return [FrameRecord(Path(folder) / "images" / f"{i}.jpg", 8, 8, ()) for i in range(count)]

    assert folder_weights(frames("generated", 5), tiles_per_frame=4) is None
    weights = folder_weights(frames("generated", 400) + frames("real", 4), tiles_per_frame=4)
    assert len(weights) == 404 * 4
    real_share = float(weights[-16:].sum() / weights.sum())
    assert real_share == pytest.approx(2 / (20 + 2))  # sqrt(4) against sqrt(400)


def test_a_tile_drawn_twice_is_another_tile_of_the_same_frame(tmp_path):
    from data.frames import read_coco_frames
    from data.scenes import SceneConfig, SceneSources, write_scenes
    from data.tiles import SceneTiles

    config = SceneConfig(width=128, height=96, min_size=16, max_size=30, signs=(1, 2))
    write_scenes(
        tmp_path, frames=2, seed=0, config=config, sources=SceneSources(signs=("synthetic",))
    )
    tiles = SceneTiles(read_coco_frames(tmp_path), 32, train=True, tiles_per_frame=2)
    first, again = tiles[1], tiles[1 + len(tiles)]
    assert not torch.equal(first[0], again[0])


def test_balanced_sampling_lifts_small_collections_and_rare_labels():
    from pathlib import Path

    from data.records import SignRecord
    from model.train import EpochShuffle, balanced_weights

    def records(origin, label, count):
        return [
            SignRecord(Path(f"{origin}{i}"), label, None, 8, 8, origin=origin) for i in range(count)
        ]

    train = records("tt100k", 0, 900) + records("tt100k", 1, 100) + records("tsrd", 2, 100)
    weights = balanced_weights(train)
    share = {origin: float(weights[[r.origin == origin for r in train]].sum() / weights.sum())
             for origin in ("tt100k", "tsrd")}  # fmt: skip
    # sqrt(1000) : sqrt(100) = 3.16 : 1 per collection, against 10 : 1 by count.
    assert share["tsrd"] == pytest.approx(1 / (1 + 1000**0.5 / 100**0.5), rel=1e-6)
    # Within TT100K the labels of 900 and 100 crops share sqrt(900) : sqrt(100) = 3 : 1 of
    # its draws, so a crop of the rare label weighs 3 times as much.
    assert weights[900] / weights[0] == pytest.approx(3.0)

    sampler = EpochShuffle(len(train), seed=4, weights=weights)
    sampler.set_epoch(2)
    drawn = list(sampler)
    assert drawn == list(sampler), "an epoch's draws depend on (seed, epoch) alone"
    assert len(drawn) == len(train) and len(set(drawn)) == len(drawn)  # repeats get new indices
    from_tsrd = sum(train[i % len(train)].origin == "tsrd" for i in drawn) / len(drawn)
    assert from_tsrd == pytest.approx(share["tsrd"], abs=0.05)


def test_reconstruction_term_trains_module_k_to_keep_its_input():
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=SIZE))
    phases = build_phases(model, "greedy-dib", LossSettings(lambda_recon=1.0))
    k = 1
    model.freeze_stages(k)
    (local,) = phases[k].step(*_batch())
    assert local.terms["recon"] > 0
    local.terms["total"].backward()
    assert all(p.grad is not None for p in model.aux_recon[k].parameters())
    untouched = [model.stages[0], model.aux_recon[0], model.aux_recon[2]]
    assert all(p.grad is None for m in untouched for p in m.parameters())
    # The exported model has no auxiliary head of any kind.
    assert not any(name.startswith("aux_") for name in model.inference_state_dict())


def test_train_only_data_joins_the_training_side_and_never_the_test(
    tiny_synthetic, tmp_path, monkeypatch
):
    from PIL import Image

    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    negatives = tmp_path / "negatives"
    (negatives / "negative").mkdir(parents=True)
    (negatives / "classes.csv").write_text("code,name,ctsrd_class_id\nnegative,No sign,\n")
    for i in range(6):
        Image.new("RGB", (20, 24), (10 * i, 40, 90)).save(negatives / "negative" / f"{i}_0.png")
    out = tmp_path / "run"
    main(_args(tiny_synthetic, out, "--method", "sgd", "--train-data", str(negatives)))
    split = json.loads((out / "metrics.json").read_text())["split"]
    assert split["train_only_data"] == [str(negatives)]
    assert split["test_images_by_origin"].get("tt100k") is None
    assert split["train_images_by_origin"]["tt100k"] == 6


def test_train_only_data_never_brings_a_test_image_back(tiny_synthetic, tmp_path, capsys):
    # The same folder given again as --train-data: its held-out images are left out of it.
    args = _args(tiny_synthetic, tmp_path / "run", "--train-data", str(tiny_synthetic))
    data = load_data(args)
    assert data.test and not {r.sha1 for r in data.test} & {r.sha1 for r in data.train}
    assert data.split["test_images_also_in_train"] == 0
    assert f"{len(data.test)} images left out" in capsys.readouterr().out


def test_scene_split_keeps_the_frames_of_a_video_on_one_side(tmp_path):
    from data.drives import DriveConfig, write_drives
    from data.scenes import SceneConfig, SceneSources

    config = SceneConfig(width=160, height=96, min_size=12, max_size=30, signs=(1, 2))
    drive = DriveConfig(frames=6, zoom=2.0, shake=1.0)
    write_drives(tmp_path, drives=4, seed=1, config=config, drive=drive, sources=SceneSources())
    data = load_data(
        _args(tmp_path, tmp_path / "run", "--task", "scenes", "--test-fraction", "0.3")
    )
    videos = [{frame.video_id for frame in side} for side in (data.train, data.test)]
    assert all(videos) and not videos[0] & videos[1]
    assert len(data.test) == 6 * len(videos[1])


def test_a_run_folder_is_never_trained_over_and_bad_arguments_stop_before_the_data(
    tiny_synthetic, tmp_path, monkeypatch
):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    out = tmp_path / "run"
    main(_args(tiny_synthetic, out, "--method", "sgd"))
    before = (out / "model.pt").read_bytes()
    with pytest.raises(SystemExit, match="holds a run: continue it with --resume"):
        main(_args(tiny_synthetic, out, "--method", "sgd", "--seed", "5"))
    assert (out / "model.pt").read_bytes() == before
    (tmp_path / "a-file").write_text("")
    nowhere = tmp_path / "no-data"  # never read: both are refused first
    with pytest.raises(SystemExit, match="a file, not a run folder"):
        main(_args(nowhere, tmp_path / "a-file"))
    with pytest.raises(SystemExit, match="--modules nonsense"):
        main(_args(nowhere, tmp_path / "x", "--modules", "nonsense"))


def test_only_a_run_among_the_runs_becomes_the_newest(tmp_path, monkeypatch):
    from model.runs import LATEST_FILE, mark_latest

    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path / "runs"))
    elsewhere = tmp_path / "elsewhere" / "run"
    mark_latest(elsewhere)
    assert not (elsewhere.parent / LATEST_FILE).exists()
    (tmp_path / "runs").mkdir()
    mark_latest(tmp_path / "runs" / "run")
    assert (tmp_path / "runs" / LATEST_FILE).read_text() == "run\n"
