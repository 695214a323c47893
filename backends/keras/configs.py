"""Spec configurations to and from the plain dicts Keras stores in ``get_config`` (JSON in ``.keras`` files)."""

from __future__ import annotations

import dataclasses

from backends.spec.config import ModelConfig, RouterConfig, ScheduleConfig


def to_dict(cfg: ModelConfig | RouterConfig | ScheduleConfig) -> dict:
    """A config dataclass as nested plain dicts (``dataclasses.asdict``)."""
    return dataclasses.asdict(cfg)


def router_config(value: RouterConfig | dict) -> RouterConfig:
    """A ``RouterConfig`` from itself or from its fields as a dict (validated by the dataclass)."""
    return value if isinstance(value, RouterConfig) else RouterConfig(**value)


def model_config(value: ModelConfig | dict) -> ModelConfig:
    """A ``ModelConfig`` from itself or from ``to_dict``'s output (nested schedule, router and MoUE dicts)."""
    return value if isinstance(value, ModelConfig) else ModelConfig.from_dict(value)
