"""Training in several processes (torchrun + DDP, gloo on the CPU) against one process.

Each 2-process run is `python -m torch.distributed.run --standalone` (torchrun) with this file
as the script (`worker_main` at the bottom): `greedysign train`, recording which files each
process opens for writing, and before it, where asked, one training step's gradients per
kind of phase. Every launch has a timeout and every test a pytest one; the runs are tiny (58
synthetic images at 32 px, 3 steps an epoch) and side by side in one fixture; every process
uses one thread.

What is compared, and how closely:
- one step with every sample scored on its own (BatchNorm from its running statistics, no
  dropout, no entropy term: the three things that couple the samples of a batch): the
  gradients of two processes, each on half of a batch, equal those of one process on the
  whole batch up to float32 rounding (rtol 1e-4), for SGD, a greedy module behind a frozen
  prefix, the heads phase and the simultaneous schedule. The sharp check of what DDP wraps
  and synchronises;
- a whole run (greedy-dib, simultaneous schedule, 2 epochs): in training each process's
  BatchNorm normalises with the statistics of its own half of the batch (DDP's default;
  SyncBatchNorm is CUDA-only) and the entropy term is estimated on each half. At 8 images a
  process that moves the loss by a few per cent and takes the weights along another path, so
  the loss curve is held to 10 % of one process's and the weights to the distance training
  moved them: loose bounds, which hold the two runs to the same training, not the same bits.
  Exact instead: the two processes end with the same model (their evaluation, merged from
  the two halves of the test set, equals rank 0's checkpoint scored alone), and a run stopped
  after its first epoch resumes to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_file
from model.distributed import RankShare
from model.greedy import LossSettings, build_phases, enter_phase, network_for
from model.network import NetConfig
from model.options import get_args_parser
from model.train import EpochShuffle

SIZE = 32
LAUNCH_TIMEOUT = 120
# (method, schedule, phase index, aux warm-up epochs): SGD, greedy module 3 (two frozen
# modules before it, four units in it with the balanced split), the heads phase, the
# simultaneous schedule, and the aux heads alone on the frozen network.
STEP_CASES = [
    ("sgd", "sequential", 0, 0),
    ("greedy-dib", "sequential", 2, 0),
    ("greedy-dib", "sequential", -1, 0),
    ("greedy-dib", "simultaneous", 0, 0),
    ("greedy-dib", "simultaneous", 0, 1),
]
COMPARED = ("train_ce", "train_mask", "train_total", "test_accuracy", "test_box_iou")


def _torchrun(trace: Path, *train_args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`greedysign train` in 2 processes under torchrun (this file is their script)."""
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", __file__, str(trace), *train_args]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        output, _ = process.communicate()
        pytest.fail(f"2-process run still going after {timeout}s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-5000:]
    return output


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to torchrun, which ends its workers (each in a session of its own) the same
    way; SIGKILL to what is left of its own group if that takes too long."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The processes share 2 cores: one thread each, this one too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ data split, no processes


def test_the_ranks_batches_of_a_step_are_the_one_process_batch():
    size, batch, world = 58, 16, 2
    one = EpochShuffle(size, seed=3)
    one.set_epoch(5)
    order = list(one)
    steps = [set(order[i * batch : (i + 1) * batch]) for i in range(size // batch)]
    shares = [RankShare(one, even=True, place=(r, world)) for r in range(world)]
    per_rank = batch // world
    for share in shares:
        assert len(share) == size // world
    orders = [list(share) for share in shares]
    for i, step in enumerate(steps):
        together = set().union(*(o[i * per_rank : (i + 1) * per_rank] for o in orders))
        assert together == step
    # Evaluation: every image once, by one rank.
    evaluation = [list(RankShare(range(7), even=False, place=(r, 3))) for r in range(3)]
    assert sorted(sum(evaluation, [])) == list(range(7))
    assert [len(RankShare(range(7), even=False, place=(r, 3))) for r in range(3)] == [3, 2, 2]


# ---------------------------------------------------------------------- one step, sharp


def _step_gradients(
    method: str, schedule: str, index: int, aux_warmup_epochs: int, place=(0, 1)
) -> dict:
    """One step of a phase on this process's part of a fixed batch of 8; the gradients."""
    from model import distributed

    torch.manual_seed(0)
    model = network_for(method, NetConfig(image_size=SIZE))
    losses = LossSettings(reg="none")
    phases = build_phases(
        model, method, losses, schedule=schedule, aux_warmup_epochs=aux_warmup_epochs
    )
    phase = phases[index]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, SIZE, SIZE, generator=generator)
    masks = (torch.rand(8, 1, SIZE, SIZE, generator=generator) > 0.7).float()
    labels = torch.randint(0, 58, (8,), generator=generator)
    batch = [t[place[0] :: place[1]] for t in (images, masks, labels)]
    batch.append(torch.ones(len(batch[0]), dtype=torch.bool))
    enter_phase(model, phase)
    with distributed.data_parallel(model, phase, losses) as parallel:
        model.eval()  # every sample on its own: BatchNorm's running statistics, no dropout
        for local in parallel.step(*batch):
            local.terms["total"].backward()
    wrapped = [type(m).__name__ for m in model.modules() if "Distributed" in type(m).__name__]
    assert not wrapped, "the DDP wrappers are taken off after the epoch"
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------- whole runs


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    common = ["--image-size", str(SIZE), "--batch-size", "16", "--workers", "0"]
    run = ["--schedule", "simultaneous", "--epochs", "2"]  # one phase: a resume lands inside
    # SGD: a weight's change follows its gradient (AdamW's first steps are about lr times the
    # gradient's sign, whatever its size, which turns tiny differences into full-size ones).
    run += ["--optimizer", "sgd", "--lr", "0.05"]
    return ["--data", str(data), "--out", str(out), *common, *run, *extra]


@pytest.fixture(scope="module")
def runs(tiny_synthetic, tmp_path_factory):
    """Side by side: the run in two processes; the same run in two processes, stopped after
    its first epoch's checkpoint (it first computes the one-step gradients: one launch fewer);
    the run in this process."""
    root = tmp_path_factory.mktemp("runs")
    trace, steps, killed_out = root / "trace", root / "steps", root / "killed" / "run"
    for folder in (trace, steps, killed_out.parent):
        folder.mkdir()
    watched = {"GREEDYSIGN_RUNS": str(root / "runs"), "WRITES_UNDER": str(root / "runs")}
    # The two-process run reads its images lazily: the items are the same as eager ones.
    two_args = _train_args(tiny_synthetic, root / "runs" / "two", "--decode", "lazy")
    two = _torchrun(trace, *two_args, env=watched)
    # Rank 0 signals torchrun itself once the checkpoint is written (worker_main), so the
    # stop lands there however slowly a loaded machine runs the epochs.
    killed = _torchrun(
        killed_out.parent,
        *_train_args(tiny_synthetic, killed_out),
        env={"STEP_GRADIENTS_TO": str(steps), "STOP_AT_FIRST_CHECKPOINT": "1"},
    )

    import model.train as train

    inits = []
    make_network = train.network_for

    def network_and_init(*args, **kwargs):
        model = make_network(*args, **kwargs)
        inits.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GREEDYSIGN_RUNS", str(root / "runs"))
            patch.setattr(train, "network_for", network_and_init)
            one = _train_args(tiny_synthetic, root / "runs" / "one")
            train.main(get_args_parser().parse_args(one))
    finally:
        try:
            killed_output, _ = killed.communicate(timeout=LAUNCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(killed)
            killed_output, _ = killed.communicate()
    return {
        "root": root,
        "trace": trace,
        "steps": steps,
        "init": inits[0],
        "output": _finish(two),
        "killed": killed_out,
        "killed_output": killed_output,
    }


@pytest.mark.timeout(3 * LAUNCH_TIMEOUT)
def test_two_processes_give_the_gradients_of_one(runs):
    ranks = [torch.load(runs["steps"] / f"rank{r}.pt") for r in range(2)]
    for case in STEP_CASES:
        key = "/".join(map(str, case))
        one = _step_gradients(*case)
        # The frozen prefix got no gradient, and every trained parameter got one.
        assert ranks[0][key].keys() == one.keys(), (key, runs["killed_output"][-2000:])
        for name, gradient in one.items():
            assert torch.equal(ranks[0][key][name], ranks[1][key][name]), (key, name)
            torch.testing.assert_close(
                ranks[0][key][name], gradient, rtol=1e-4, atol=1e-6, msg=f"{key} {name}"
            )


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.timeout(3 * LAUNCH_TIMEOUT)
def test_two_processes_train_like_one(runs, tiny_synthetic, capsys):
    one, two = runs["root"] / "runs" / "one", runs["root"] / "runs" / "two"
    curves = [[float(row["train_total"]) for row in _history(run)] for run in (one, two)]
    assert len(curves[0]) == len(curves[1]) == 2
    for a, b in zip(*curves, strict=True):
        assert abs(a - b) <= 0.10 * abs(a), curves
    single = load_file(one / "checkpoint.pth")["model"]
    double = load_file(two / "checkpoint.pth")["model"]
    assert single.keys() == double.keys()
    init = runs["init"]
    trained = [k for k, v in single.items() if v.is_floating_point() and "running" not in k]
    apart = sum((single[k] - double[k]).pow(2).sum() for k in trained).sqrt()
    moved = sum((single[k] - init[k]).pow(2).sum() for k in trained).sqrt()
    assert apart <= moved, (apart, moved)
    print(f"loss curves {curves}; weights apart {apart:.3f}, moved {moved:.3f}")

    # Both processes ended with rank 0's model: their merged evaluation of the two halves of
    # the test set is rank 0's checkpoint scored alone, on the whole of it.
    from model.evaluate import evaluate_model

    alone = evaluate_model(two / "checkpoint.pth", [tiny_synthetic], subset="test")
    last = _history(two)[-1]
    for key in ("accuracy", "box_iou", "mask_miou"):
        assert float(last[f"test_{key}"]) == pytest.approx(alone[key], rel=1e-6, abs=1e-9)

    # `greedysign eval` reads the exported model.
    from app.cli import main as greedysign

    capsys.readouterr()
    assert greedysign(["eval", "--model", str(two), "--data", str(tiny_synthetic)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == alone["images"]


def test_rank_0_alone_writes_and_prints(runs):
    writes = {r: (runs["trace"] / f"writes-rank{r}.txt").read_text().split() for r in range(2)}
    assert writes[1] == []
    names = {Path(path).name for path in writes[0]}
    assert {"metrics.json", "history.csv", "curves.png", ".LATEST.tmp"} <= names
    for temporary in (".checkpoint.pth.", ".model.pt."):  # save_atomic's
        assert any(name.startswith(temporary) for name in names), names
    run = runs["root"] / "runs" / "two"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoint.pth", "model.pt", "metrics.json", "history.csv"]
        + ["curves.png", "gradients.png", "confusion.png"]
    )
    output = runs["output"]
    assert output.count("run written to") == 1
    assert output.count("modules (1/1) epoch 2/2:") == 1
    assert "2 processes" in output


@pytest.mark.timeout(2 * LAUNCH_TIMEOUT)
def test_a_stopped_two_process_run_resumes_exactly(runs, tiny_synthetic):
    out = runs["killed"]
    checkpoint = load_file(out / "checkpoint.pth")
    assert not (out / "model.pt").exists(), "the run was stopped before it finished"
    assert (checkpoint["phase"], checkpoint["epoch"]) == (0, 1), runs["killed_output"][-2000:]
    output = _finish(_torchrun(out.parent, *_train_args(tiny_synthetic, out, "--resume")))
    assert f"resuming {out} at phase modules, epoch 1" in output

    straight = runs["root"] / "runs" / "two"
    resumed = load_file(out / "checkpoint.pth")["model"]
    uninterrupted = load_file(straight / "checkpoint.pth")["model"]
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    for a, b in zip(_history(out), _history(straight), strict=True):
        assert [a[k] for k in COMPARED] == [b[k] for k in COMPARED]


# ---------------------------------------------------------------- the processes' side


def worker_main(trace: str, *train_args: str) -> int:
    """One of torchrun's processes: `greedysign train`, recording the files it opens for
    writing under $WRITES_UNDER; first, with $STEP_GRADIENTS_TO, the one-step gradients; with
    $STOP_AT_FIRST_CHECKPOINT, rank 0 sends torchrun SIGTERM (as a user's Ctrl-C or a
    scheduler's stop would) as soon as the run's first checkpoint is written, and waits for
    torchrun to end it."""
    import torch.distributed as dist

    import model.train as train
    from app.cli import main as greedysign

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # greedysign train joins it
    if steps := os.environ.get("STEP_GRADIENTS_TO"):
        place = (dist.get_rank(), dist.get_world_size())
        gradients = {"/".join(map(str, c)): _step_gradients(*c, place) for c in STEP_CASES}
        torch.save(gradients, Path(steps) / f"rank{place[0]}.pt")
    under = os.environ.get("WRITES_UNDER")
    writes: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and under and str(args[0]).startswith(under):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR):
                writes.append(str(args[0]))

    sys.addaudithook(audit)
    if os.environ.get("STOP_AT_FIRST_CHECKPOINT"):
        save_atomic = train.save_atomic

        def save_then_stop(*args, **kwargs):
            saved = save_atomic(*args, **kwargs)
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(LAUNCH_TIMEOUT)  # torchrun's SIGTERM ends this process first
            return saved

        train.save_atomic = save_then_stop
    try:
        return greedysign(["train", *train_args])
    finally:
        (Path(trace) / f"writes-rank{dist.get_rank()}.txt").write_text("\n".join(writes))
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(worker_main(*sys.argv[1:]))
