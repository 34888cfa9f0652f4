"""The agent's metric plumbing: multiprocess values without a getpid per write, read
back by prometheus-client's own collector; remembered label children."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from edge_agent.telemetry import mp_values
from edge_agent.telemetry.metrics import Metrics


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    mp_values._files.clear()  # files are per process and directory: start clean
    yield tmp_path
    for f in mp_values._files.values():
        f.close()
    mp_values._files.clear()


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
    }


def test_values_land_in_prometheus_client_files_at_once(multiproc_dir: Path) -> None:
    counter = mp_values.MultiProcessValue(
        "counter", "edge_test", "edge_test_total", ("kind",), ("a",), "help"
    )
    gauge = mp_values.MultiProcessValue(
        "gauge", "edge_open", "edge_open", (), (), "help", multiprocess_mode="livesum"
    )
    counter.inc(2)
    counter.inc(1.5)
    gauge.set(7)
    # No flush step: another process's scrape (the collector reads the files) sees it.
    samples = _samples(multiproc_dir)
    assert samples[("edge_test_total", (("kind", "a"),))] == 3.5
    assert samples[("edge_open", ())] == 7
    assert counter.get() == 3.5
    # A value made again (a restarted metric in the same process) reads its file back.
    again = mp_values.MultiProcessValue(
        "counter", "edge_test", "edge_test_total", ("kind",), ("a",), "help"
    )
    assert again.get() == 3.5


def test_label_children_are_remembered_and_keywords_still_work() -> None:
    m = Metrics()
    child = m.cache_results.labels("/v1/chat/completions", "hit", "-")
    assert m.cache_results.labels("/v1/chat/completions", "hit", "-") is child
    named = m.cache_results.labels(endpoint="/v1/chat/completions", result="hit", tenant="-")
    assert named is child  # prometheus-client's own lookup: the same child
    child.inc()
    assert m.cache_results.labels("/v1/chat/completions", "hit", "-")._value.get() == 1
