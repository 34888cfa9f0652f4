"""Stages named in the config (`pipeline.<slot>: ["package.module:function", ...]`)."""

from __future__ import annotations

import importlib
from typing import Any

from edge_agent.config import PipelineConfig
from edge_agent.pipeline.base import SLOTS, ResponseStage, Stage


class ExtensionError(RuntimeError):
    pass


def load_slots(config: PipelineConfig) -> dict[str, list[Stage]]:
    """slot → its request stages, imported; ExtensionError names the one that fails."""
    slots: dict[str, list[Stage]] = {}
    for slot in SLOTS:
        for i, ref in enumerate(getattr(config, slot)):
            where = f"pipeline.{slot}[{i}] ({ref!r})"
            stage = _load(ref, where)
            if not callable(stage):
                raise ExtensionError(f"{where}: not a function of the request")
            slots.setdefault(slot, []).append(stage)
    return slots


def load_response_stages(config: PipelineConfig) -> list[ResponseStage]:
    stages = []
    for i, ref in enumerate(config.response):
        where = f"pipeline.response[{i}] ({ref!r})"
        stage = _load(ref, where)
        if not (
            callable(getattr(stage, "headers", None)) and callable(getattr(stage, "body", None))
        ):
            raise ExtensionError(f"{where}: needs headers() and body() (docs/architecture.md)")
        stages.append(stage)
    return stages


def _load(ref: str, where: str) -> Any:
    module_name, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ExtensionError(f"{where}: cannot load it: {exc}") from None
