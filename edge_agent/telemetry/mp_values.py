"""prometheus-client's multiprocess values without a system call per write.

In multiprocess mode prometheus-client makes a `getpid()` system call before every
`inc()` and `observe()`, to notice a fork and switch files. A request makes a dozen
such writes; on the agent's hot path that check alone was ~7 % of its CPU (issue 15,
py-spy). The agent's workers are started with exec (runtime/workers.py), never forked
once metrics exist, so the pid is settled when the first value is made. Each write
still goes straight to the process's mmap file, exactly as prometheus-client does it:
other workers' scrapes see it at once and a killed worker loses nothing.

The file format and names are prometheus-client's own: its MultiProcessCollector and
`mark_process_dead` read them unchanged.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client.mmap_dict import MmapedDict, mmap_key

_lock = threading.Lock()  # one lock for every value and file: writes come from any thread
_files: dict[str, MmapedDict] = {}


class MultiProcessValue:
    """A metric value kept in this process's file (a drop-in for prometheus-client's)."""

    _multiprocess = True

    __slots__ = ("_file", "_key", "_timestamp", "_value")

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **_: Any,
    ) -> None:
        prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        with _lock:
            self._file = _files.get(prefix)
            if self._file is None:
                directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
                path = os.path.join(directory, f"{prefix}_{os.getpid()}.db")
                self._file = _files[prefix] = MmapedDict(path)
            self._value, self._timestamp = self._file.read_value(self._key)

    def inc(self, amount: float) -> None:
        with _lock:
            self._value += amount
            self._timestamp = 0.0
            self._file.write_value(self._key, self._value, 0.0)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            self._value = value
            self._timestamp = timestamp or 0.0
            self._file.write_value(self._key, value, self._timestamp)

    def set_exemplar(self, exemplar: Any) -> None:
        return  # not in multiprocess mode (as prometheus-client)

    def get(self) -> float:
        with _lock:
            return self._value

    def get_exemplar(self) -> None:
        return None
