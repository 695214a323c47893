"""The backend-neutral specification of DynaMoE: the single source of truth (NumPy only).

The modules, each importing only those above it (``tests/test_spec_imports.py`` checks it):

- ``validate``: the configs' validation errors.
- ``schedules``: experts per layer E_l (Definition 2, Eq. 8-12).
- ``config``: the validated configurations and every default (Section 5.3, Tables 1 and 7).
- ``rng``: every random number, by documented stream.
- ``stats``: per-layer routing statistics (Table 6).
- ``ops``: the array interface the math is written against (``Ops``) and NumPy's (``NumpyOps``).
- ``dispatch``: how an expert mixture ``sum_i w_i E_i(h)`` is evaluated (Eq. 6).
- ``dynamic``: DynaMoE's dynamic selection and combine weights (Eq. 4-6, Algorithm 1).
- ``routers``: every router by ``RouterConfig.kind`` (gate Eq. 1, noise Eq. 7, the baselines) and
  Switch's balancing loss.
- ``kinds``: the registry through which a model kind (``ModelConfig.kind``) plugs into the core.
- ``forward``: the network's forward math (Section 3.4), LayerNorm, cross-entropy.
- ``init``: parameter names, shapes and seeded initialisation.
- ``losses``: the training objective (cross-entropy + the kind's balancing loss).
- ``optim``: AdamW with cosine annealing (Section 5.3), written once against ``ops``.
- ``accounting``: parameter counts, active FLOPs (Proposition 1, Eq. 15-16), routing patterns (Theorem 1).
- ``networks``: the model kinds ``"dynamoe"`` and ``"mlp"``.
- ``moue``: the model kind ``"moue"`` (Mixture of Universal Experts), a leaf: nothing else imports it.
  It and ``networks`` register their kinds when this package is imported.
- ``transformer``: the backbone ``"transformer"`` (a causal pre-LN Transformer whose feed-forward is any
  kind's layer), a leaf registered on import like ``moue``.
- ``probes``: the Transformer probes of Section 5 (NumPy, standalone).
"""

from . import moue, networks, transformer  # noqa: F401  (registers the model kinds and backbones)
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
from .dynamic import combine_weights, select_experts
from .init import init_params, param_shapes
from .kinds import layer_widths
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
    "layer_widths",
    "model_size",
    "param_shapes",
    "parameter_count",
    "routing_patterns_dynamic",
    "routing_patterns_fixed",
    "select_experts",
]
