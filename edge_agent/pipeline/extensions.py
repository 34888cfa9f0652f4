"""Stages named in the config (`pipeline.<slot>: ["package.module:function", ...]`)."""

from __future__ import annotations

import importlib

from edge_agent.config import PipelineConfig
from edge_agent.pipeline.base import SLOTS, Stage


class ExtensionError(RuntimeError):
    pass


def load_slots(config: PipelineConfig) -> dict[str, list[Stage]]:
    """slot → its stages, imported; ExtensionError names the one that fails."""
    slots: dict[str, list[Stage]] = {}
    for slot in SLOTS:
        for i, ref in enumerate(getattr(config, slot)):
            module_name, _, name = ref.partition(":")
            where = f"pipeline.{slot}[{i}] ({ref!r})"
            try:
                stage = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError) as exc:
                raise ExtensionError(f"{where}: cannot load it: {exc}") from None
            if not callable(stage):
                raise ExtensionError(f"{where}: not a function of the request")
            slots.setdefault(slot, []).append(stage)
    return slots
