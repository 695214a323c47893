"""The parity cases: the configurations every backend is checked on against the float64 reference.

``ROUTER_CASES``: every router kind (``spec.routers``) and MoUE (``spec.moue``), Tiny, in every backend's
tests (``tests/backend_checks.check_router_parity``). ``CONFIGS``: the cases of the backend x backend
matrix (``python -m harness parity``, ``harness.parity_worker``): the paper's Small model in both routing
scopes, a Tiny language model, the MLP, and the baselines and MoUE from ``ROUTER_CASES`` (top-1, DynaMoE
with its balancing loss and the MoUE-Switch combination stay in the tests alone, to keep the matrix
quick), and the Transformer with a DynaMoE and with an MoUE feed-forward. ``TRAJECTORIES``: the matrix's
training trajectories: DynaMoE (Small, descending), MoUE (trajectory state, a local expert, UELB) routed
by Switch (capacity, dropping), and the Transformer language model with DynaMoE. ``TRANSFORMER_CASES``:
the Transformer backbone (``spec.transformer``) with each feed-forward (DynaMoE, the dense MLP, MoUE) and
an ascending top-2 schedule, in every backend's tests (``tests/backend_checks.check_transformer_parity``:
forward, masks, the probes' inputs, gradients and a short trajectory, under the MLP backbone's tolerances).
``LAYER_CASES``: the native layers (``DynaMoE``, ``DynaMoEStack``, ``MoUEStack``, ``TransformerBlock`` (its first
layer, on sequences) by ``from_arrays``) in the
matrix and in every backend's tests (``tests/backend_checks.check_layer_parity``).
"""

from __future__ import annotations

from backends.spec import ModelConfig, RouterConfig, ScheduleConfig
from backends.spec.config import MoUEConfig

MOUE = MoUEConfig(pool_size=12, local_experts=1, trajectory_dim=4)
ROUTER_CASES = {
    "dynamic-balance": ModelConfig(size="tiny", router=RouterConfig(balance_weight=0.01)),
    "top1": ModelConfig(size="tiny", router=RouterConfig(kind="topk", top_k=1)),
    "top2": ModelConfig(size="tiny", router=RouterConfig(kind="topk", top_k=2)),
    "switch": ModelConfig(size="tiny", router=RouterConfig(kind="switch", balance_weight=0.01)),
    "gshard": ModelConfig(size="tiny", router=RouterConfig(kind="gshard", balance_weight=0.01)),
    "expert-choice": ModelConfig(size="tiny", router=RouterConfig(kind="expert_choice", capacity_factor=1.0)),
    "moue": ModelConfig(size="tiny", kind="moue", moue=MOUE, router=RouterConfig(balance_weight=0.01)),
    "moue-switch": ModelConfig(size="tiny", kind="moue", moue=MOUE, router=RouterConfig(kind="switch", balance_weight=0.01)),
}
_LM = {"size": "tiny", "task": "lm", "vocab_size": 97, "backbone": "transformer"}
TRANSFORMER_CASES = {
    "transformer-dynamoe": ModelConfig(**_LM),
    "transformer-mlp": ModelConfig(**_LM, kind="mlp"),
    "transformer-moue": ModelConfig(**_LM, kind="moue", moue=MOUE, router=RouterConfig(balance_weight=0.01)),
    "transformer-ascending-top2": ModelConfig(**_LM, num_heads=2, schedule=ScheduleConfig("ascending"), router=RouterConfig(kind="topk")),
}
CONFIGS = {
    "small-descending": ModelConfig(),
    "small-token-scope": ModelConfig(router=RouterConfig(scope="token")),
    "tiny-lm": ModelConfig(size="tiny", task="lm", vocab_size=97),
    "small-mlp": ModelConfig(kind="mlp"),
    **{f"tiny-{case}": ROUTER_CASES[case] for case in ("top2", "switch", "gshard", "expert-choice", "moue")},
    **{case: TRANSFORMER_CASES[case] for case in ("transformer-dynamoe", "transformer-moue")},
}
TRAJECTORIES = {
    "trajectory": ModelConfig(),
    "trajectory-moue-switch": ROUTER_CASES["moue-switch"],
    "trajectory-transformer": TRANSFORMER_CASES["transformer-dynamoe"],
}
# The native layers (``backends/<fw>/layers.py``) built by ``from_arrays`` on the spec's arrays, as a user
# holds them: ``(layer class, ModelConfig)``; ``DynaMoE`` is the config's layer 0 alone, the stacks are its
# residual layers and final LayerNorm. Forward (float32, float64; training mode with the given noise and
# evaluation without), masks, and the gradients w.r.t. the input and every parameter of
# ``sum(y * probe) / N`` plus the layer's balancing term, in the matrix (``parity_worker.layer_case``)
# and in every backend's tests (``tests/backend_checks.check_layer_parity``).
LAYER_CASES = {
    "layer-dynamoe": ("DynaMoE", ROUTER_CASES["dynamic-balance"]),
    "layer-dynamoe-stack": ("DynaMoEStack", ROUTER_CASES["dynamic-balance"]),
    "layer-moue-stack": ("MoUEStack", ROUTER_CASES["moue"]),
    "layer-transformer-block": ("TransformerBlock", TRANSFORMER_CASES["transformer-dynamoe"]),
}
# The language-model head alone (``spec.forward.linear_cross_entropy``): its loss and the gradients of the
# states, head weight and bias against the float64 full-logits formula, in chunks (a ragged last one).
HEAD_CASE = {"tokens": 301, "hidden": 16, "vocab": 997, "chunk_elements": 997 * 64}
