"""Glue the framework backends share: the spec's dotted parameter names as module trees, the arrays one
layer holds, weight files (``.npz`` under the spec's names, readable by every backend and NumPy), and the
configuration, shapes, initialisation rules and math of the framework-native layers (``StackConfig``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.spec import forward as F
from backends.spec.config import ModelConfig, MoUEConfig, RouterConfig, ScheduleConfig
from backends.spec.init import check_params, init_rule
from backends.spec.kinds import layer_widths, of
from backends.spec.losses import aux_loss
from backends.spec.transformer import ATTENTION_MAPS
from backends.spec.validate import check_int, fail

DYNAMOE_LAYER_NAMES = ("gate.weight", "experts.w1", "experts.b1", "experts.w2", "experts.b2")
FEED_FORWARD_NAMES = ("ffn.w1", "ffn.b1", "ffn.w2", "ffn.b2")
ATTENTION_NAMES = tuple(f"attn.{name}.{leaf}" for name in ATTENTION_MAPS for leaf in ("weight", "bias"))
WEIGHTS_SUFFIX = ".npz"


def under(params: Mapping, prefix: str) -> dict:
    """The entries of ``params`` whose names start with ``prefix``, named without it (``layers.0.`` ->
    ``gate.weight``, ...)."""
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def group_names(params: Mapping) -> dict[str, dict]:
    """``{module path: {leaf: value}}`` of dotted names: ``experts.w1`` -> ``{"experts": {"w1": ...}}``."""
    groups: dict[str, dict] = {}
    for name, value in params.items():
        module, _, leaf = name.rpartition(".")
        groups.setdefault(module, {})[leaf] = value
    return groups


def param_tree(params: Mapping, group: Callable[[dict], object], node: Callable[[], object]):
    """Nested modules whose parameter paths are the dotted names of ``params``: ``group(leaves)`` makes the
    module holding one path's arrays, ``node()`` an empty one; children are attached with ``setattr``
    (which registers them in PyTorch and MLX alike)."""
    root = node()
    made = {"": root}
    for module, leaves in group_names(params).items():
        parent, path = root, ""
        *parents, last = module.split(".")
        for part in parents:
            path = f"{path}.{part}" if path else part
            if path not in made:
                made[path] = node()
                setattr(parent, part, made[path])
            parent = made[path]
        made[module] = group(leaves)
        setattr(parent, last, made[module])
    return root


def layer_arrays(params: Mapping, names: tuple[str, ...], layer: str) -> dict[str, np.ndarray]:
    """``params`` in the order of ``names``, which must be exactly its keys (the names inside one layer)."""
    if set(params) != set(names):
        raise ValueError(
            f"{layer} holds {', '.join(names)}: missing {sorted(set(names) - set(params))}, unexpected {sorted(set(params) - set(names))}"
        )
    return {name: params[name] for name in names}


def _weights_path(path) -> Path:
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise ValueError(f"weights are written as {WEIGHTS_SUFFIX} files, not {path.name!r}")
    return path


def write_weights(params: Mapping[str, np.ndarray], path) -> None:
    """Write ``export_params``'s arrays to the ``.npz`` file ``path`` under the spec's names."""
    with open(_weights_path(path), "wb") as file:
        np.savez(file, **params)


def read_weights(cfg: ModelConfig, path) -> dict[str, np.ndarray]:
    """The arrays of a weights file, checked against ``cfg`` (names and shapes, ``spec.init.check_params``)."""
    with np.load(_weights_path(path)) as file:
        params = {name: file[name] for name in file.files}
    check_params(cfg, {name: value.shape for name, value in params.items()})
    return params


# --- the framework-native layers' configuration, shapes, initialisation and math ----------------------------
#
# ``DynaMoE``, ``FeedForward``, ``DynaMoEStack``, ``MoUEStack`` and ``TransformerBlock`` in each framework are
# built from sizes. A ``StackConfig`` holds what the spec's layer math reads of a ``ModelConfig``
# (``spec.kinds``' ``layers``, ``layer_shapes`` and ``layer_widths``, ``spec.init.fan_in``,
# ``spec.losses.aux_loss``) at any width, so the native layers evaluate, shape and initialise themselves
# with the spec's own functions; the router, schedule and MoUE settings are the spec's validated
# dataclasses, built before any array is made.

ROUTER_DEFAULTS = {f.name: getattr(RouterConfig, f.name) for f in dataclasses.fields(RouterConfig)}
ROUTER_ARGUMENTS = tuple(["router", *(name for name in ROUTER_DEFAULTS if name != "kind")])  # ``router`` is ``kind``
MOUE_ARGUMENTS = tuple(f.name for f in dataclasses.fields(MoUEConfig))


@dataclass(frozen=True)
class StackConfig:
    """The residual layers and final LayerNorm of a network (``spec.forward.model_forward`` between the
    input embedding and the head) at width ``hidden_dim``; ``of(cfg)`` is a ``ModelConfig``'s. The widths
    are ``ModelConfig``'s own properties, evaluated on these fields (``expert_width`` / ``mlp_width``
    override the ratios)."""

    kind: str
    hidden_dim: int
    num_layers: int
    router: RouterConfig = field(default_factory=RouterConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    moue: MoUEConfig | None = None
    expert_width: int | None = None
    mlp_width: int | None = None
    expert_hidden_ratio: float = ModelConfig.expert_hidden_ratio
    mlp_hidden_ratio: float = ModelConfig.mlp_hidden_ratio
    layer_norm_eps: float = ModelConfig.layer_norm_eps
    backbone: str = "mlp"  # the residual stack (``ModelConfig.backbone``'s default)

    experts_per_layer = ModelConfig.experts_per_layer

    @property
    def expert_hidden(self) -> int:
        return ModelConfig.expert_hidden.fget(self) if self.expert_width is None else self.expert_width

    @property
    def mlp_hidden(self) -> int:
        return ModelConfig.mlp_hidden.fget(self) if self.mlp_width is None else self.mlp_width

    @classmethod
    def of(cls, cfg: ModelConfig) -> StackConfig:
        return cls(
            cfg.kind, cfg.hidden_dim, cfg.num_layers, cfg.router, cfg.schedule, cfg.moue,
            expert_hidden_ratio=cfg.expert_hidden_ratio, mlp_hidden_ratio=cfg.mlp_hidden_ratio, layer_norm_eps=cfg.layer_norm_eps,
        )  # fmt: skip


def router_config(owner: str, router="dynamic", num_experts: int | None = None, **arguments) -> RouterConfig:
    """The ``RouterConfig`` of a native layer's arguments (``router`` is ``RouterConfig.kind``), validated by
    the dataclass. ``router`` may instead be a ``RouterConfig`` (or its fields as a dict, as Keras's
    ``get_config`` stores it), taken as is, the other router arguments then left at their defaults. From
    arguments, the top-K router's ``top_k`` must not exceed ``num_experts`` (the widest layer's E)."""
    unknown = sorted(set(arguments) - set(ROUTER_ARGUMENTS))
    if unknown:
        raise TypeError(f"{owner} got unexpected arguments {unknown}: the router's are {', '.join(ROUTER_ARGUMENTS)}")
    if isinstance(router, (RouterConfig, Mapping)):
        changed = sorted(name for name, value in arguments.items() if value != ROUTER_DEFAULTS[name])
        if changed:
            raise ValueError(f"{owner}: give the router's settings in its RouterConfig or as arguments, not both ({', '.join(changed)})")
        return router if isinstance(router, RouterConfig) else RouterConfig(**router)
    config = RouterConfig(kind=router, **arguments)
    if config.kind == "topk" and num_experts is not None:
        check_int(f"{owner}", "top_k", config.top_k, 1, num_experts)
    return config


def layer_config(owner: str, kind: str, d_model: int, width: int, num_experts: int = 1, router: RouterConfig | None = None) -> StackConfig:
    """The one-layer ``StackConfig`` of a ``DynaMoE`` (``width`` = its expert_hidden) or ``FeedForward``
    (``width`` = its hidden width; ``kind="mlp"``)."""
    check_int(owner, "d_model", d_model, 1)
    check_int(owner, "num_experts" if kind == "dynamoe" else "hidden", num_experts if kind == "dynamoe" else width, 1)
    check_int(owner, "expert_hidden", width, 1)
    schedule = ScheduleConfig("uniform", e_min=1, e_max=num_experts)
    if kind == "mlp":
        return StackConfig("mlp", d_model, 1, schedule=schedule, mlp_width=width)
    return StackConfig("dynamoe", d_model, 1, router or RouterConfig(), schedule, expert_width=width)


def stack_config(
    owner: str,
    kind: str,
    d_model: int,
    num_layers: int,
    schedule: str,
    e_min: int,
    e_max: int,
    expert_hidden,
    router_args: dict,
    moue_args=None,
) -> StackConfig:
    """A ``DynaMoEStack``'s or ``MoUEStack``'s validated ``StackConfig`` (the spec's errors, raised first)."""
    check_int(owner, "d_model", d_model, 1)
    check_int(owner, "num_layers", num_layers, 1)
    if expert_hidden is not None:
        check_int(owner, "expert_hidden", expert_hidden, 1)
    sched = ScheduleConfig(schedule, e_min=e_min, e_max=e_max)
    router = router_config(owner, num_experts=e_max, **router_args)
    moue = MoUEConfig(**moue_args) if kind == "moue" else None
    config = StackConfig(kind, d_model, num_layers, router, sched, moue, expert_width=expert_hidden)
    if kind == "moue" and max(config.experts_per_layer()) > moue.pool_size:
        fail(
            owner,
            "pool_size",
            moue.pool_size,
            f"must be >= the widest layer's window E_l = {max(config.experts_per_layer())} (raise pool_size)",
        )
    check_int(owner, "expert_hidden", config.expert_hidden, 1)
    return config


def block_config(owner: str, d_model: int, num_heads: int, layer_norm_eps: float, feed_forward: StackConfig) -> StackConfig:
    """A ``TransformerBlock``'s one-layer config: its feed-forward's (``feed_forward``, the config of a
    ``DynaMoE`` or ``FeedForward`` of width ``d_model``) on the Transformer backbone, whose ``layer_shapes``
    are the block's spec names (``attn.*``, then the feed-forward's) and whose rules initialise them."""
    check_int(owner, "d_model", d_model, 1)
    check_int(owner, "num_heads", num_heads, 1)
    if d_model % num_heads:
        divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
        fail(owner, "num_heads", num_heads, f"must divide d_model = {d_model}: choose one of {divisors}")
    if isinstance(layer_norm_eps, bool) or not isinstance(layer_norm_eps, (int, float)) or not layer_norm_eps > 0:
        fail(owner, "layer_norm_eps", layer_norm_eps, "must be a number > 0")
    if feed_forward.hidden_dim != d_model:
        fail(owner, "feed_forward", f"a layer of d_model = {feed_forward.hidden_dim}", f"must map the block's width d_model = {d_model}")
    return dataclasses.replace(feed_forward, backbone="transformer", layer_norm_eps=float(layer_norm_eps))


def attention_shapes(cfg: StackConfig) -> dict[str, tuple[int, ...]]:
    """The attention maps of a ``block_config``, named inside the block (``attn.query.weight``, ...)."""
    return {name: shape for name, shape in layer_shapes(cfg).items() if name in ATTENTION_NAMES}


def split_block_arrays(arrays: Mapping) -> tuple[dict, dict]:
    """A block's spec arrays (``under(params, "layers.<i>.")`` of a Transformer) as ``(attention, feed-forward)``."""
    return {k: v for k, v in arrays.items() if k.startswith("attn.")}, {k: v for k, v in arrays.items() if not k.startswith("attn.")}


def block_kind(cfg: ModelConfig) -> str:
    """``cfg.kind`` if a ``TransformerBlock`` can hold its layer (``"dynamoe"``: a ``DynaMoE``, ``"mlp"``: a
    ``FeedForward``), else a ``ValueError``."""
    if cfg.kind not in ("dynamoe", "mlp"):
        raise ValueError(f"TransformerBlock holds a DynaMoE or FeedForward layer, not kind {cfg.kind!r} (MoUE's pool spans the layers)")
    return cfg.kind


def sequence_length(h, d_model: int) -> int:
    """``T`` of sequences ``h`` (B, T, d_model), else a ``ValueError``."""
    shape = tuple(h.shape)
    if len(shape) != 3 or shape[-1] != d_model:
        raise ValueError(f"TransformerBlock reads sequences (B, T, {d_model}), not an array of shape {shape}")
    return int(shape[1])


def stack_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The parameters of a stack (the kind's residual layers, then ``norm.gamma``, ``norm.beta``), in
    ``spec.init.param_shapes`` order."""
    return {**of(cfg).layer_shapes(cfg), "norm.gamma": (cfg.hidden_dim,), "norm.beta": (cfg.hidden_dim,)}


def layer_shapes(cfg: StackConfig) -> dict[str, tuple[int, ...]]:
    """The parameters of a one-layer config's layer, named inside it (``gate.weight``, ``ffn.w1``, ...)."""
    return under(of(cfg).layer_shapes(cfg), "layers.0.")


def init_rules(cfg, shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> dict[str, tuple[str, float]]:
    """``{name: spec.init.init_rule}`` of each parameter (named in the stack with ``prefix``)."""
    return {name: init_rule(prefix + name, shape, cfg) for name, shape in shapes.items()}


def checked_arrays(owner: str, arrays: Mapping, shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """``arrays`` in the order of ``shapes``, which must be exactly their names and shapes."""
    arrays = layer_arrays(arrays, tuple(shapes), owner)
    for name, shape in shapes.items():
        if tuple(np.shape(arrays[name])) != tuple(shape):
            raise ValueError(f"{owner}: {name!r} has shape {tuple(np.shape(arrays[name]))}, the layer needs {tuple(shape)}")
    return arrays


def dynamoe_sizes(arrays: Mapping) -> tuple[int, int, int]:
    """``(d_model, num_experts, expert_hidden)`` of a DynaMoE layer's arrays (from ``experts.w1``)."""
    arrays = layer_arrays(arrays, DYNAMOE_LAYER_NAMES, "DynaMoE")
    e, d, dh = (int(n) for n in np.shape(arrays["experts.w1"]))
    return d, e, dh


def feed_forward_sizes(arrays: Mapping) -> tuple[int, int]:
    """``(d_model, hidden)`` of a feed-forward block's arrays (from ``ffn.w1``)."""
    arrays = layer_arrays(arrays, FEED_FORWARD_NAMES, "FeedForward")
    return tuple(int(n) for n in np.shape(arrays["ffn.w1"]))


def stack_forward(ops, params: Mapping, h, cfg, noises=None):
    """``(LayerNorm(h_L), routings)`` of the stack on tokens ``h`` (N, d): the kind's residual layers
    (``spec.kinds``) and the final LayerNorm, as ``spec.forward.model_forward`` evaluates them."""
    h, routings = of(cfg).layers(ops, params, h, cfg, noises)
    return F.layer_norm(ops, h, params["norm.gamma"], params["norm.beta"], cfg.layer_norm_eps), routings


def balance_loss(ops, routings: list, cfg):
    """``balance_weight`` x the kind's balancing loss (``spec.losses.aux_loss``), ``None`` when it is off."""
    weight = float(cfg.router.balance_weight)
    return weight * aux_loss(ops, routings, cfg) if weight > 0 and routings else None


def routing_stats(ops, routing):
    """``(counts, avg_active)``: per-expert selections (E,) and the mean number of active experts per token."""
    active = ops.to_float(routing.mask, routing.probs)
    return ops.sum(active, axis=0), ops.mean(ops.sum(active, axis=-1))


def tokens_of(ops, h, d_model: int):
    """``(tokens (N, d), leading shape)``: ``h`` (..., d) with its leading axes flattened."""
    lead = tuple(ops.shape(h)[:-1])
    return ops.reshape(h, (math.prod(lead), d_model)), lead


def noise_widths(cfg) -> list[int]:
    """The gate noise widths of a stack's layers (``spec.kinds.layer_widths``)."""
    return layer_widths(cfg)
