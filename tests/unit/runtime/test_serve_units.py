"""Pure pieces of the inference server: wire codecs, the batcher, the feedback store."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tauon_runtime.serve.batcher import BatcherClosed, DynamicBatcher
from tauon_runtime.serve.codec import BadInput, decode_v2_input, parse_array_body
from tauon_runtime.serve.envelope import InferenceRequest, PredictRequest, parse
from tauon_runtime.serve.feedback import FeedbackStore, PredictionCache, make_record
from tauon_runtime.serve.images import decode_image

pytestmark = pytest.mark.timeout(60)

CHW = (1, 8, 8)


def v2(shape, datatype="FP32", data=None, name="input"):
    if data is None:
        data = list(range(int(np.prod(shape))))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def decode_v2(tensor):
    """A tensor as the server meets it: validated in its envelope, then decoded."""
    req = parse(InferenceRequest, {"inputs": [tensor]}, "the body")
    return decode_v2_input(req.inputs[0], "input", CHW, 1024)


def parse_arrays(body):
    return parse_array_body(parse(PredictRequest, body, "the JSON body"), CHW, 1024)


# ---------------------------------------------------------------------------------------------
# v2 tensors


@pytest.mark.parametrize(
    "tensor",
    [
        v2([2, 1, 8, 8]),
        v2([2, 1, 8, 8], data=np.arange(128).reshape(2, 1, 8, 8).tolist()),  # nested
        v2([2, 1, 8, 8], "UINT8"),
        v2([2, 1, 8, 8], "INT64"),
        v2([2, 1, 8, 8], "fp64"),
        v2([2, 1, 8, 8], "FP16"),
    ],
)
def test_v2_input_accepted(tensor):
    x = decode_v2(tensor)
    assert x.dtype == np.float32 and x.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(x.ravel(), np.arange(128, dtype=np.float32))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (v2([1, 1, 7, 7]), "expected [-1, 1, 8, 8]"),
        (v2([64]), "expected [-1, 1, 8, 8]"),
        (v2([1, 1, 8, 8], "BYTES"), "has datatype BYTES, but this model takes numbers"),
        (v2([1, 1, 8, 8], "BOOL"), "datatype 'BOOL'"),
        (v2([2, 1, 8, 8], data=list(range(64))), "has 64 values but shape [2, 1, 8, 8] needs 128"),
        (v2([1, 1, 8, 8], "INT32", data=[0.5] * 64), "non-integer"),
        (v2([1, 1, 8, 8], "UINT8", data=[300] * 64), "outside the range of UINT8"),
        (v2([1, 1, 8, 8], data=["a"] * 64), "numbers only"),
        (v2([1, 1, 8, 8], data=[True] * 64), "numbers only"),
        (v2([1, 1, 8, 8], data=[[1, 2], [3]]), "ragged"),
        (v2([1, 1, 8, 8], data=5), "inputs[0].data: Input should be a valid list"),
        (v2([1, 1, 8, 8], data=[float("nan")] * 64), "NaN"),
        (v2([0, 1, 8, 8], data=[]), "empty batch"),
        (v2([1, 1, 8, 8], name="pixels"), "named 'input'"),
        ({"name": "input", "shape": [1, 1, 8, 8]}, "inputs[0].datatype: Field required"),
        (v2(["1", 1, 8, 8], data=[0] * 64), "inputs[0].shape[0]: Input should be a valid integer"),
        (v2([-1, 1, 8, 8], data=[0] * 64), "inputs[0].shape[0]: Input should be greater than"),
        (v2([1, 1, 8, 8], data=[1e39] * 64), "outside the range of FP32"),
        (v2([1, 1, 8, 8], "FP64", data=[1e300] * 64), "out-of-range"),
        (v2([1, 1, 8, 8], "FP16", data=[7e4] * 64), "outside the range of FP16"),
        (v2([2000, 1, 8, 8], data=[0]), "at most 1024"),
    ],
)
def test_v2_input_rejected(tensor, message):
    with pytest.raises(BadInput) as e:
        decode_v2(tensor)
    assert e.value.status == 400
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------------
# /v1/predict arrays


SAMPLE = np.arange(64, dtype=np.float64).reshape(1, 8, 8)


@pytest.mark.parametrize(
    ("body", "n"),
    [
        ({"instances": [SAMPLE.tolist()]}, 1),  # [C, H, W]
        ({"instances": [SAMPLE[0].tolist(), SAMPLE[0].tolist()]}, 2),  # [H, W] for one channel
        ({"instances": [SAMPLE.ravel().tolist()]}, 1),  # flat
        ({"instances": [np.moveaxis(SAMPLE, 0, -1).tolist()]}, 1),  # [H, W, C]
        ({"array": SAMPLE.tolist()}, 1),
        ({"array": SAMPLE[0].tolist()}, 1),
        ({"array": np.stack([SAMPLE] * 3).tolist()}, 3),  # a batch [N, C, H, W]
        ({"array": np.stack([SAMPLE.ravel()] * 4).tolist()}, 4),  # a batch of flat samples
    ],
)
def test_array_layouts(body, n):
    x = parse_arrays(body)
    assert x.shape == (n, 1, 8, 8)
    np.testing.assert_array_equal(x[0], SAMPLE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2, 3], "must be a JSON object"),
        ({"instances": [[0] * 64], "array": []}, '{"instances"'),
        ({"instances": []}, "instances: List should have at least 1 item"),
        ({"instances": [[1, 2, 3]]}, "instances[0] has shape [3]"),
        ({"instances": [SAMPLE.tolist(), [[1]]]}, "instances[1] has shape [1, 1]"),
        ({"array": [[1, 2], [3, 4]]}, "'array' has shape [2, 2]"),
        ({"array": "abc"}, "array: Input should be a valid list"),
        ({"array": [1e39] * 64}, "out-of-range"),
    ],
)
def test_array_rejected(body, message):
    with pytest.raises(BadInput) as e:
        parse_arrays(body)
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------------
# Images


def png(array: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def test_image_grayscale_png_round_trips():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    out = decode_image(png(pixels, "L"), CHW)
    assert out.dtype == np.uint8 and out.shape == (1, 8, 8)
    np.testing.assert_array_equal(out[0], pixels)


def test_image_rgb_is_converted_and_resized():
    rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    rgb[:, :, 1] = 255  # pure green
    out = decode_image(png(rgb, "RGB", "JPEG"), CHW)
    assert out.shape == (1, 8, 8)
    # ITU-R 601-2 luma of pure green is ~150
    assert 140 <= int(out.mean()) <= 160
    out3 = decode_image(png(rgb, "RGB"), (3, 16, 16))
    assert out3.shape == (3, 16, 16) and out3[1].min() == 255 and out3[0].max() == 0


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n not really", 400, "could not decode"),
        (b"hello, world", 400, "could not decode"),
    ],
)
def test_image_undecodable(data, status, message):
    with pytest.raises(BadInput) as e:
        decode_image(data, CHW)
    assert e.value.status == status and message in str(e.value)


def test_image_truncated_png():
    data = png(np.zeros((32, 32), dtype=np.uint8), "L")
    with pytest.raises(BadInput, match="could not decode"):
        decode_image(data[: len(data) // 2], CHW)


def test_image_for_a_four_channel_model_is_415():
    with pytest.raises(BadInput) as e:
        decode_image(png(np.zeros((8, 8), dtype=np.uint8), "L"), (4, 8, 8))
    assert e.value.status == 415


# ---------------------------------------------------------------------------------------------
# Batcher


def run(coro):
    return asyncio.run(coro)


def doubling(calls):
    def forward(x):
        calls.append(x.shape[0])
        time.sleep(0.002)
        return x.reshape(x.shape[0], -1)[:, :1] * 2

    return forward


def test_batcher_forms_batches_and_routes_results():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(doubling(calls), max_batch_size=16, max_latency_ms=20)
        await b.start()
        xs = [np.full((1, 1, 2, 2), i, dtype=np.float32) for i in range(100)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()
        return outs

    outs = run(main())
    assert [float(o[0, 0]) for o in outs] == [2.0 * i for i in range(100)]
    assert sum(calls) == 100 and max(calls) <= 16 and max(calls) > 1


def test_batcher_never_splits_a_request_and_carries_the_overflow():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(doubling(calls), max_batch_size=8, max_latency_ms=10)
        await b.start()
        xs = [np.full((n, 1, 1, 1), n, dtype=np.float32) for n in (5, 5, 3, 12)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()
        return outs

    outs = run(main())
    assert [o.shape[0] for o in outs] == [5, 5, 3, 12]
    assert all((o == 2 * o.shape[0]).all() for o in outs)
    assert calls == [5, 8, 12]  # 5+5 > 8 carries; a request larger than the max runs alone


def test_batcher_does_not_make_a_lone_client_wait():
    async def main():
        b = DynamicBatcher(doubling([]), max_batch_size=32, max_latency_ms=500)
        await b.start()
        started = time.perf_counter()
        for _ in range(5):
            with b.arrival() as arrival:
                await b.submit(np.ones((1, 1, 1, 1), np.float32), arrival)
        elapsed = time.perf_counter() - started
        await b.stop()
        return elapsed

    assert run(main()) < 0.5  # five requests, none waited the 500 ms max delay


def test_batcher_waits_for_requests_still_being_read():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(doubling(calls), max_batch_size=32, max_latency_ms=300)
        await b.start()

        async def request(delay):
            with b.arrival() as arrival:
                await asyncio.sleep(delay)  # the body is still arriving
                return await b.submit(np.ones((1, 1, 1, 1), np.float32), arrival)

        async def abandoned():
            with b.arrival():
                await asyncio.sleep(0.02)
                raise ValueError("bad input")  # never submitted: must not hold batches back

        results = await asyncio.gather(request(0), request(0.05), request(0.1), abandoned(),
                                       return_exceptions=True)
        await b.stop()
        assert b._arriving == 0 and b._inflight == 0
        return results

    results = run(main())
    assert isinstance(results[3], ValueError)
    assert calls == [3]


def test_batcher_off_is_one_at_a_time():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(doubling(calls), max_batch_size=1, max_latency_ms=50)
        await b.start()
        await asyncio.gather(*(b.submit(np.ones((1, 1, 1, 1), np.float32)) for _ in range(20)))
        await b.stop()

    run(main())
    assert calls == [1] * 20


def test_batcher_failed_forward_fails_only_its_batch():
    async def main():
        def forward(x):
            if (x < 0).any():
                raise RuntimeError("boom")
            return x.reshape(x.shape[0], -1)

        b = DynamicBatcher(forward, max_batch_size=4, max_latency_ms=0)
        await b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(-np.ones((1, 1, 1, 1), np.float32))
        ok = await b.submit(np.ones((1, 1, 1, 1), np.float32))
        await b.stop()
        return ok

    assert run(main()).shape == (1, 1)


def test_batcher_skips_requests_that_gave_up():
    calls: list[int] = []

    async def main():
        def slow(x):
            calls.append(x.shape[0])
            time.sleep(0.2)
            return x.reshape(x.shape[0], -1)

        b = DynamicBatcher(slow, max_batch_size=1, max_latency_ms=0)
        await b.start()
        first = asyncio.create_task(b.submit(np.ones((1, 1, 1, 1), np.float32)))
        await asyncio.sleep(0.05)  # the first is in the forward pass
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await b.submit(np.ones((1, 1, 1, 1), np.float32))
        await first
        await asyncio.sleep(0.05)
        await b.stop()

    run(main())
    assert calls == [1]  # the abandoned request never reached the model


def test_batcher_stop_answers_queued_then_refuses():
    async def main():
        b = DynamicBatcher(doubling([]), max_batch_size=2, max_latency_ms=1)
        await b.start()
        tasks = [asyncio.create_task(b.submit(np.ones((1, 1, 1, 1), np.float32))) for _ in range(10)]
        await asyncio.sleep(0)
        await b.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(BatcherClosed):
            await b.submit(np.ones((1, 1, 1, 1), np.float32))
        return results

    results = run(main())
    assert all(isinstance(r, np.ndarray) for r in results)


# ---------------------------------------------------------------------------------------------
# Prediction cache and feedback store


def test_prediction_cache_is_bounded_by_entries_and_bytes():
    cache = PredictionCache(max_entries=3, max_bytes=1 << 20)
    for i in range(5):
        cache.put(make_record(str(i), "0", 0.9, "array", np.zeros((1, 8, 8), np.float32), 1 << 20))
    assert len(cache) == 3 and cache.get("0") is None and cache.get("4") is not None
    small = PredictionCache(max_entries=100, max_bytes=3 * (256 + 64 * 4))
    for i in range(10):
        small.put(make_record(str(i), "0", 0.9, "array", np.zeros((1, 8, 8), np.float32), 1 << 20))
    assert len(small) == 3
    big = make_record("x", "0", 0.9, "image", np.zeros((3, 512, 512), np.uint8), keep_bytes=1024)
    assert big.input is None and big.input_summary()["shape"] == [3, 512, 512]


def test_feedback_store_appends_lines_and_applies_retention(tmp_path):
    path = tmp_path / "fb" / "feedback.jsonl"
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).isoformat()
    new = dt.datetime.now(dt.UTC).isoformat()
    path.parent.mkdir()
    path.write_text(
        json.dumps({"timestamp": old, "correct": True, "trueLabel": "1"}) + "\n"
        + json.dumps({"timestamp": new, "correct": False, "trueLabel": "2"}) + "\n"
    )
    store = FeedbackStore(path, retention_days=7)
    store.open()
    assert store.stats.as_dict()["total"] == 1
    store.append({"timestamp": new, "correct": True, "trueLabel": "3"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["trueLabel"] for r in lines] == ["2", "3"]
    stats = store.stats.as_dict()
    assert stats["total"] == 2 and stats["correct"] == 1 and stats["incorrect"] == 1 and stats["accuracy"] == 0.5
