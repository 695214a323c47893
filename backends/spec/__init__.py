"""The backend-neutral specification of DynaMoE: the single source of truth (NumPy only).

Configuration (``config``), schedules (``schedules``, Eq. 8-12), routing (``routing``, Eq. 4-7),
the model's math written once against an array interface (``ops``, ``forward``), seeded randomness
(``rng``, ``init``), the optimiser (``optim``) and accounting (``accounting``, Prop. 1, Theorem 1).
"""

from .accounting import active_flops_per_token, parameter_count, routing_patterns_dynamic, routing_patterns_fixed
from .config import (
    SCHEDULES,
    SIZES,
    ModelConfig,
    ModelSize,
    RouterConfig,
    ScheduleConfig,
    TrainConfig,
    model_size,
)
from .init import init_params, param_shapes
from .routing import combine_weights, select_experts
from .schedules import expert_counts

__all__ = [
    "SCHEDULES",
    "SIZES",
    "ModelConfig",
    "ModelSize",
    "RouterConfig",
    "ScheduleConfig",
    "TrainConfig",
    "active_flops_per_token",
    "combine_weights",
    "expert_counts",
    "init_params",
    "model_size",
    "param_shapes",
    "parameter_count",
    "routing_patterns_dynamic",
    "routing_patterns_fixed",
    "select_experts",
]
