"""The batching engine: batch formation, overload, deadlines, batch failures, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from model.inference import Predictor
from service.engine import Engine
from service.errors import InferenceFailed, InferenceTimeout, NotReady, Overloaded


class GatedPredictor(Predictor):
    """The real predictor, except that each batch first waits for `gate`: a way to keep the
    worker thread busy for as long as a test needs."""

    def __init__(self, base: Predictor):
        super().__init__(base.model, base.info, base.device, base.fp16)
        self.gate = threading.Event()
        self.gate.set()  # open for the warm-up
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def predict_batch(self, batch, original_sizes, top_k=5):
        self.entered.set()
        if not self.gate.wait(timeout=10):
            raise RuntimeError("gate never opened")
        self.batch_sizes.append(len(original_sizes))
        return super().predict_batch(batch, original_sizes, top_k)


class FailingPredictor(Predictor):
    """A model that fails on the batch after `fail_next` is set."""

    fail_next = False

    def predict_batch(self, batch, original_sizes, top_k=5):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model broke")
        return super().predict_batch(batch, original_sizes, top_k)


class ShortPredictor(Predictor):
    """A broken model that returns one prediction too few."""

    def predict_batch(self, batch, original_sizes, top_k=5):
        return super().predict_batch(batch, original_sizes, top_k)[:-1]


@pytest.fixture(scope="module")
def predictor(tiny_model_path) -> Predictor:
    return Predictor.load(tiny_model_path, "cpu")


def image(size: int = 32) -> torch.Tensor:
    return torch.rand(3, size, size)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def test_concurrent_requests_share_batches(predictor: Predictor) -> None:
    batches: list[int] = []

    async def scenario():
        engine = Engine(
            predictor, max_batch_size=4, max_wait_ms=20, on_batch=lambda n, s: batches.append(n)
        )
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.submit(image(), (40, 50), top_k=2) for _ in range(6))
            )
        finally:
            await engine.stop()

    results = run(scenario())
    assert batches == [4, 2]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2]
    for result in results:
        assert result.prediction.mask.shape == (40, 50)
        assert len(result.prediction.top_k) == 2


def test_each_request_gets_its_own_top_k(predictor: Predictor) -> None:
    async def scenario():
        engine = Engine(predictor, max_batch_size=4, max_wait_ms=20)
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.submit(image(), (32, 32), top_k=k) for k in (1, 5))
            )
        finally:
            await engine.stop()

    one, five = run(scenario())
    assert one.batch_size == 2
    assert len(one.prediction.top_k) == 1 and len(five.prediction.top_k) == 5


def test_a_lone_request_goes_once_it_has_waited_max_wait(predictor: Predictor) -> None:
    async def scenario():
        engine = Engine(predictor, max_batch_size=8, max_wait_ms=40)
        await engine.start()
        try:
            return await engine.submit(image(), (32, 32))
        finally:
            await engine.stop()

    result = run(scenario())
    assert result.batch_size == 1
    assert result.queue_ms >= 40 - 1  # it waited for company, then went alone


def test_a_full_queue_is_refused_at_once(predictor: Predictor) -> None:
    gated = GatedPredictor(predictor)

    async def scenario():
        engine = Engine(gated, max_batch_size=2, max_wait_ms=0, queue_size=3)
        await engine.start()
        gated.gate.clear()
        gated.entered.clear()
        try:
            busy = asyncio.create_task(engine.submit(image(), (32, 32)))
            await asyncio.to_thread(gated.entered.wait, 10)  # the worker holds request 1
            queued = [asyncio.create_task(engine.submit(image(), (32, 32))) for _ in range(3)]
            await asyncio.sleep(0)
            assert engine.queue_depth == 3
            with pytest.raises(Overloaded) as refused:
                await engine.submit(image(), (32, 32))
            gated.gate.set()
            done = await asyncio.gather(busy, *queued)
            return refused.value, done
        finally:
            gated.gate.set()
            await engine.stop()

    refused, done = run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert len(done) == 4


def test_admission_is_refused_at_capacity(predictor: Predictor) -> None:
    async def scenario():
        engine = Engine(predictor, max_batch_size=1, queue_size=2)
        with pytest.raises(NotReady):
            engine.admit().__enter__()
        await engine.start()
        try:
            with engine.admit(), engine.admit():
                assert engine.admitted == 2
                with pytest.raises(Overloaded, match="at capacity"), engine.admit():
                    pass
            assert engine.admitted == 0
            with engine.admit():
                return await engine.submit(image(), (32, 32))
        finally:
            await engine.stop()

    assert run(scenario()).batch_size == 1


def test_requests_past_their_deadline_time_out_and_are_never_run(predictor: Predictor) -> None:
    gated = GatedPredictor(predictor)

    async def scenario():
        engine = Engine(gated, max_batch_size=4, max_wait_ms=0, request_timeout_s=0.2)
        await engine.start()
        gated.gate.clear()
        gated.entered.clear()
        gated.batch_sizes.clear()
        try:
            first = asyncio.create_task(engine.submit(image(), (32, 32)))
            await asyncio.to_thread(gated.entered.wait, 10)
            stale = asyncio.create_task(engine.submit(image(), (32, 32)))
            outcomes = await asyncio.gather(first, stale, return_exceptions=True)
            gated.gate.set()
            fresh = await engine.submit(image(), (32, 32))  # the engine still works
            return outcomes, fresh
        finally:
            gated.gate.set()
            await engine.stop()

    (first, stale), fresh = run(scenario())
    assert isinstance(first, InferenceTimeout) and isinstance(stale, InferenceTimeout)
    assert first.status_code == 504
    # The held batch ran, then the fresh request alone: the stale one was dropped unseen.
    assert gated.batch_sizes == [1, 1]
    assert fresh.batch_size == 1


def test_a_batch_error_reaches_every_waiter_and_the_engine_goes_on(predictor: Predictor) -> None:
    failing = FailingPredictor(predictor.model, predictor.info, predictor.device, predictor.fp16)

    async def scenario():
        engine = Engine(failing, max_batch_size=2, max_wait_ms=50)
        await engine.start()
        try:
            failing.fail_next = True
            failed = await asyncio.gather(
                engine.submit(image(32), (32, 32)),
                engine.submit(image(32), (32, 32)),
                return_exceptions=True,
            )
            after = await engine.submit(image(32), (32, 32))
            return failed, after
        finally:
            await engine.stop()

    failed, after = run(scenario())
    assert all(isinstance(error, InferenceFailed) for error in failed)
    assert failed[0].status_code == 500
    assert after.prediction.mask.shape == (32, 32)


def test_batches_hold_one_input_shape_and_every_job_is_answered(predictor: Predictor) -> None:
    batches: list[int] = []

    async def scenario():
        engine = Engine(
            predictor, max_batch_size=4, max_wait_ms=30, on_batch=lambda n, s: batches.append(n)
        )
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.submit(image(size), (size, size)) for size in (32, 16, 32, 16, 32))
            )
        finally:
            await engine.stop()

    results = run(scenario())
    assert [r.prediction.mask.shape for r in results] == [(s, s) for s in (32, 16, 32, 16, 32)]
    assert sorted(batches) == [2, 3]  # one batch per shape, none mixing them
    assert {r.batch_size for r in results[::2]} == {3} and {
        r.batch_size for r in results[1::2]
    } == {2}


def test_the_number_of_outputs_is_checked(predictor: Predictor) -> None:
    short = ShortPredictor(predictor.model, predictor.info, predictor.device, predictor.fp16)

    async def scenario():
        engine = Engine(short, max_batch_size=2, max_wait_ms=50)
        # The warm-up itself runs through predict_batch; only the engine checks counts.
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.submit(image(), (32, 32)) for _ in range(2)), return_exceptions=True
            )
        finally:
            await engine.stop()

    outcomes = run(scenario())
    assert all(
        isinstance(o, InferenceFailed) and "1 predictions for 2" in o.message for o in outcomes
    )


def test_stop_refuses_new_and_queued_requests(predictor: Predictor) -> None:
    gated = GatedPredictor(predictor)

    async def scenario():
        engine = Engine(gated, max_batch_size=1, max_wait_ms=0)
        await engine.start()
        gated.gate.clear()
        gated.entered.clear()
        running = asyncio.create_task(engine.submit(image(), (32, 32)))
        await asyncio.to_thread(gated.entered.wait, 10)
        queued = asyncio.create_task(engine.submit(image(), (32, 32)))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(engine.stop())
        await asyncio.sleep(0.05)
        gated.gate.set()
        await stopping
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(NotReady):
            await engine.submit(image(), (32, 32))
        return outcomes, engine.ready

    (running, queued), ready = run(scenario())
    assert isinstance(running, NotReady) and isinstance(queued, NotReady)
    assert not ready
