"""Validated configuration of a DynaMoE experiment (paper Section 5.3, Tables 1 and 7).

Every default of the project lives here once. Each dataclass validates itself on construction and
raises a ``ValueError`` naming the field, the bad value and the allowed range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .schedules import SCHEDULES, check_bounds, expert_counts
from .validate import check_choice, check_int, fail

SCOPES = ("batch", "token")
COMBINE_INPUTS = ("probs", "logits")
ROUTER_KINDS = ("dynamic", "topk", "switch", "gshard", "expert_choice")
MODEL_KINDS = ("dynamoe", "mlp", "moue")
BACKBONES = ("mlp", "transformer")  # what the residual layers sit in (``ModelConfig.backbone``)
BACKBONE_FIELDS = ("backbone", "num_heads")  # in ``ModelConfig.as_dict`` only for a Transformer
TASKS = ("classify", "lm")


@dataclass(frozen=True)
class ModelSize:
    """One row of Table 1. ``paper_params`` is the paper's count, printed beside ours, never used."""

    name: str
    num_layers: int
    hidden_dim: int
    paper_params: int


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize("tiny", 2, 64, 85_000),
    "small": ModelSize("small", 4, 128, 340_000),
    "medium": ModelSize("medium", 6, 256, 1_400_000),
    "large": ModelSize("large", 8, 512, 5_600_000),
}


def model_size(name: str) -> ModelSize:
    """The Table 1 row called ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in SIZES:
        raise ValueError(f"unknown model size {name!r}: choose one of {', '.join(SIZES)}")
    return SIZES[key]


@dataclass(frozen=True)
class ScheduleConfig:
    """Experts per layer (Definition 2, Eq. 8-12): a schedule name and its bounds E_min <= E_max.

    Paper defaults: E_max = 8, E_min = 1 (Section 7.9, Table 3's best row).
    """

    name: str = "descending"
    e_min: int = 1
    e_max: int = 8

    def __post_init__(self) -> None:
        check_choice("ScheduleConfig", "name", self.name, SCHEDULES)
        check_bounds(self.e_min, self.e_max)


@dataclass(frozen=True)
class RouterConfig:
    """Dynamic routing (Eq. 4-7, Algorithm 1). Defaults are Table 7's best values.

    - ``tau``: percentile in percent (70 = 70th percentile), open interval (0, 100).
    - ``temperature``: T of Eq. 6, > 0.
    - ``noise_std``: sigma of Eq. 7, >= 0 (training only).
    - ``k_min``: minimum active experts (Algorithm 1 line 6), >= 1; clamped to E_l in layers with fewer.
    - ``k_max``: cap on active experts; ``None`` means the layer's E_l (the "layer-dependent maximum").
    - ``scope``: ``"batch"`` (one threshold over all gate values of the layer in the batch, default) or
      ``"token"`` (Eq. 4 read literally: each token's own E_l gates). See ``spec.dynamic``.
    - ``combine``: the values softmaxed in Eq. 6: ``"probs"`` (the noisy gate probabilities, default) or
      ``"logits"`` (the gate logits).
    - ``kind``: ``"dynamic"`` (DynaMoE, default) or a baseline router (Section 7.10 items 2-4):
      ``"topk"`` (fixed top-``top_k``), ``"switch"`` (top-1 with capacity), ``"gshard"`` (top-2 with
      capacity), ``"expert_choice"`` (each expert picks its tokens). See ``spec.routers``.
    - ``top_k``: K of the fixed top-K router (Eq. 2-3).
    - ``capacity_factor``: expert capacity = factor * tokens * k / E (Switch, GShard, expert choice);
      tokens over capacity are dropped and pass through the residual.
    - ``balance_weight``: coefficient of the auxiliary load-balancing loss (0 = none, the paper's
      DynaMoE; Switch uses 0.01).
    """

    tau: float = 70.0
    temperature: float = 0.5
    noise_std: float = 0.1
    k_min: int = 1
    k_max: int | None = None
    scope: str = "batch"
    combine: str = "probs"
    kind: str = "dynamic"
    top_k: int = 2
    capacity_factor: float = 1.25
    balance_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.tau, (int, float)) or not 0.0 < float(self.tau) < 100.0:
            fail("RouterConfig", "tau", self.tau, "must be a percentile in the open interval (0, 100); 70 means the 70th percentile")
        if not isinstance(self.temperature, (int, float)) or not float(self.temperature) > 0.0:
            fail("RouterConfig", "temperature", self.temperature, "must be > 0")
        if not isinstance(self.noise_std, (int, float)) or not float(self.noise_std) >= 0.0:
            fail("RouterConfig", "noise_std", self.noise_std, "must be >= 0")
        check_int("RouterConfig", "k_min", self.k_min, 1)
        if self.k_max is not None:
            check_int("RouterConfig", "k_max", self.k_max, self.k_min)
        check_choice("RouterConfig", "scope", self.scope, SCOPES)
        check_choice("RouterConfig", "combine", self.combine, COMBINE_INPUTS)
        check_choice("RouterConfig", "kind", self.kind, ROUTER_KINDS)
        check_int("RouterConfig", "top_k", self.top_k, 1)
        if not isinstance(self.capacity_factor, (int, float)) or not float(self.capacity_factor) > 0.0:
            fail("RouterConfig", "capacity_factor", self.capacity_factor, "must be > 0 (1.0 = exactly the balanced load)")
        if not isinstance(self.balance_weight, (int, float)) or not float(self.balance_weight) >= 0.0:
            fail("RouterConfig", "balance_weight", self.balance_weight, "must be >= 0 (0 disables the balancing loss)")

    def layer_bounds(self, num_experts: int) -> tuple[int, int]:
        """(k_min, k_max) in a layer of ``num_experts`` experts (Eq. 5), both clamped to E_l."""
        k_max = num_experts if self.k_max is None else min(self.k_max, num_experts)
        return min(self.k_min, num_experts), k_max


@dataclass(frozen=True)
class MoUEConfig:
    """Mixture of Universal Experts (Chen et al. 2026; ``../shared/spec/MOUE.md``; the math: ``spec.moue``).

    Only the paper's abstract survives, so every field is an inferred, documented choice:

    - ``pool_size``: U universal experts shared by every layer (same FFN shape as a DynaMoE expert).
    - ``stride``: the staggered rotation; layer l sees pool experts ``(stride * l + j) mod U`` for
      ``j < E_l`` (E_l from the schedule, so the choice set per layer equals the matched MoE's).
      ``None``: ``max(1, U // L)``, which spreads the L windows evenly round the pool.
    - ``local_experts``: layer-local experts per layer beside the window (0: none; the abstract names none).
    - ``trajectory_dim``: size r of the universal router's trajectory state (0: no state, the router
      then sees only ``h``).
    - ``exposure_correction``: UELB divides each expert's load and gate mass by its exposure (the layers
      that see it); ``False`` gives the uncorrected pooled Switch loss (the ablation).
    """

    pool_size: int = 16
    stride: int | None = None
    local_experts: int = 0
    trajectory_dim: int = 8
    exposure_correction: bool = True

    def __post_init__(self) -> None:
        check_int("MoUEConfig", "pool_size", self.pool_size, 1)
        if self.stride is not None:
            check_int("MoUEConfig", "stride", self.stride, 0)
        check_int("MoUEConfig", "local_experts", self.local_experts, 0)
        check_int("MoUEConfig", "trajectory_dim", self.trajectory_dim, 0)
        if not isinstance(self.exposure_correction, bool):
            fail("MoUEConfig", "exposure_correction", self.exposure_correction, "must be True or False")

    def layer_stride(self, num_layers: int) -> int:
        """The rotation step between consecutive layers' windows."""
        return max(1, self.pool_size // num_layers) if self.stride is None else self.stride


@dataclass(frozen=True)
class ModelConfig:
    """The whole network (Section 3.4): input projection, L residual layers, LayerNorm, head.

    - ``kind``: ``"dynamoe"`` (residual DynaMoE layers), ``"mlp"`` (the dense baseline: one
      feed-forward block per layer) or ``"moue"`` (layers sharing a universal pool, ``spec.moue``;
      needs ``moue=MoUEConfig(...)``). Every kind but the MLP routes with ``router.kind``.
    - ``task``: ``"classify"`` (flattened images, ``input_dim`` features) or ``"lm"`` (token ids,
      an embedding of ``vocab_size`` rows, next-token head over the vocabulary, per position).
    - ``expert_hidden_ratio``: expert hidden width d_h = ratio * d (Prop. 1's d_h; not recovered,
      0.5 chosen: see ``spec.accounting`` for the parameter-count evidence).
    - ``mlp_hidden_ratio``: hidden width of the MLP baseline's blocks (2: Table 1's Tiny 85K).
    - ``moue``: the MoUE settings (``kind="moue"``; ``spec.moue``), ``None`` otherwise.
    - ``backbone``: ``"mlp"`` (the paper's residual stack, default) or ``"transformer"`` (a causal
      pre-LayerNorm Transformer whose feed-forward is ``kind``'s layer: ``spec.transformer``; ``lm`` only).
    - ``num_heads``: attention heads of the Transformer (divides ``hidden_dim``); only for that backbone.
      ``as_dict`` leaves both out for the MLP backbone, so the run keys of MLP-backbone runs are unchanged.
    """

    size: str = "small"
    kind: str = "dynamoe"
    task: str = "classify"
    input_dim: int = 784
    num_classes: int = 10
    vocab_size: int = 50_257
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    expert_hidden_ratio: float = 0.5
    mlp_hidden_ratio: float = 2.0
    layer_norm_eps: float = 1e-5
    moue: Any = None
    backbone: str = "mlp"
    num_heads: int = 4

    def __post_init__(self) -> None:
        model_size(self.size)
        check_choice("ModelConfig", "kind", self.kind, MODEL_KINDS)
        check_choice("ModelConfig", "task", self.task, TASKS)
        check_int("ModelConfig", "input_dim", self.input_dim, 1)
        check_int("ModelConfig", "num_classes", self.num_classes, 2)
        check_int("ModelConfig", "vocab_size", self.vocab_size, 2)
        for name in ("expert_hidden_ratio", "mlp_hidden_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or int(round(value * self.hidden_dim)) < 1:
                fail("ModelConfig", name, value, "must be > 0 and give a hidden width of at least 1")
        if not isinstance(self.schedule, ScheduleConfig):
            fail("ModelConfig", "schedule", self.schedule, "must be a ScheduleConfig")
        if not isinstance(self.router, RouterConfig):
            fail("ModelConfig", "router", self.router, "must be a RouterConfig")
        if self.kind == "moue":
            if not isinstance(self.moue, MoUEConfig):
                fail("ModelConfig", "moue", self.moue, "kind='moue' needs a MoUEConfig (e.g. moue=MoUEConfig(pool_size=16))")
            widest = max(self.experts_per_layer())
            if widest > self.moue.pool_size:
                fail("ModelConfig", "moue", self.moue, f"pool_size must be >= the widest layer's window E_l = {widest} (raise pool_size)")
        elif self.moue is not None:
            fail("ModelConfig", "moue", self.moue, f"is only for kind='moue' (kind is {self.kind!r}): leave it None")
        check_choice("ModelConfig", "backbone", self.backbone, BACKBONES)
        check_int("ModelConfig", "num_heads", self.num_heads, 1)
        if self.backbone == "transformer":
            if self.task != "lm":
                fail("ModelConfig", "backbone", self.backbone, "is a causal language model: it needs task='lm'")
            if self.hidden_dim % self.num_heads:
                fail("ModelConfig", "num_heads", self.num_heads, f"must divide the hidden width {self.hidden_dim}")
        elif self.num_heads != 4:
            fail("ModelConfig", "num_heads", self.num_heads, "is only for backbone='transformer': leave it 4")

    @property
    def num_layers(self) -> int:
        return model_size(self.size).num_layers

    @property
    def hidden_dim(self) -> int:
        return model_size(self.size).hidden_dim

    @property
    def expert_hidden(self) -> int:
        return int(round(self.expert_hidden_ratio * self.hidden_dim))

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_hidden_ratio * self.hidden_dim))

    @property
    def output_dim(self) -> int:
        return self.vocab_size if self.task == "lm" else self.num_classes

    def experts_per_layer(self) -> list[int]:
        """E_l for l = 0..L-1 from the schedule (empty meaning for the MLP: one block a layer)."""
        s = self.schedule
        return expert_counts(s.name, self.num_layers, s.e_min, s.e_max)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """``dataclasses.asdict``, without ``backbone`` and ``num_heads`` for the MLP backbone (the fields
        a run key hashes: MLP-backbone configs hash as they did before the Transformer existed)."""
        out = dataclasses.asdict(self)
        if self.backbone == "mlp":
            for name in BACKBONE_FIELDS:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, fields: dict) -> ModelConfig:
        """The config ``dataclasses.asdict`` gave ``fields`` (nested dicts for schedule, router, MoUE; as
        stored in run records and in Keras's ``get_config``); validated like any other."""
        fields = dict(fields)
        for name, nested in (("schedule", ScheduleConfig), ("router", RouterConfig), ("moue", MoUEConfig)):
            if isinstance(fields.get(name), dict):
                fields[name] = nested(**fields[name])
        return cls(**fields)


SEQUENCE_LENGTH = 128


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with cosine annealing (Section 5.3, Table 7).

    The paper lost its betas and weight decay; the common 0.9 / 0.999 / 0.01 with eps 1e-8 are chosen.
    The learning rate follows ``lr * 0.5 * (1 + cos(pi * step / total_steps))`` per optimizer step,
    from ``lr`` to 0, no warm-up (``spec.optim.learning_rate``).
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    batch_size: int = 256
    epochs: int = 20
    eval_batch_size: int = 256
    patience: int | None = None  # stop when the held-out metric has not improved for this many epochs

    def as_dict(self) -> dict:
        """The fields, ``patience`` only when set (so the keys of runs without early stopping stay as they were)."""
        out = dataclasses.asdict(self)
        if self.patience is None:
            del out["patience"]
        return out

    def __post_init__(self) -> None:
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            fail("TrainConfig", "lr", self.lr, "must be > 0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail("TrainConfig", name, value, "must be in [0, 1)")
        if not isinstance(self.eps, (int, float)) or not self.eps > 0:
            fail("TrainConfig", "eps", self.eps, "must be > 0")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            fail("TrainConfig", "weight_decay", self.weight_decay, "must be >= 0")
        check_int("TrainConfig", "batch_size", self.batch_size, 1)
        check_int("TrainConfig", "epochs", self.epochs, 1)
        check_int("TrainConfig", "eval_batch_size", self.eval_batch_size, 1)
        if self.patience is not None:
            check_int("TrainConfig", "patience", self.patience, 1)
