"""MLX modules of DynaMoE: ``DynaMoE`` (one layer), ``FeedForward`` (the MLP baseline's block),
``DynaMoEStack`` and ``MoUEStack`` (the paper's residual stacks with their final LayerNorm),
``TransformerBlock`` (a causal pre-LN attention block around a ``DynaMoE`` or ``FeedForward``).

Each is an ``mlx.nn.Module`` built from sizes, like mlx-lm's layers: it initialises itself with the
spec's distributions (``spec.init.init_rule``) from MLX's generator (``mx.random.seed``), and in training
mode (``self.training``, MLX's default; ``eval()`` switches it off) draws its gate noise (sigma =
``noise_std``) from ``mx.random``. Given arrays (``from_arrays``, or ``arrays=``) and noise (``noise=`` /
``noises=``) it evaluates the spec's math and equals the float64 reference. Parameter paths are the spec's
names, so ``save_weights``/``load_weights`` files hold them. After each call: ``last_routing``,
``last_counts``, ``last_avg_active`` and ``aux_loss`` (``balance_weight`` x the balancing loss, zero when
it is off: add it to the loss inside the function ``nn.value_and_grad`` differentiates). They are plain
attributes, not parameters; inside ``mx.compile`` return what you need from the compiled function.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from backends import common
from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.config import ModelConfig, MoUEConfig, RouterConfig, ScheduleConfig

from .ops import MlxOps

OPS = MlxOps()
DTYPES = {"float32": (mx.float32, np.float32), "float64": (mx.float64, np.float64)}
_NAMES = {mx.float32: "float32", mx.float64: "float64"}
R, S, M = common.ROUTER_DEFAULTS, ScheduleConfig, MoUEConfig


def dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` for a name or an ``mx.Dtype``; float64 only on MLX's CPU device."""
    name = _NAMES.get(dtype, str(dtype)) if isinstance(dtype, mx.Dtype) else dtype
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if name == "float64" and mx.default_device().type != mx.cpu:
        raise ValueError(
            f"dtype 'float64' needs MLX's CPU device (the default device is {mx.default_device()}): MLX's "
            "Metal and CUDA back ends have no float64; call mx.set_default_device(mx.cpu) first or use float32"
        )
    return name


def to_mlx(value, dtype) -> mx.array:
    """A NumPy array (or an MLX array) as an MLX array of float type ``dtype`` (NumPy rounds to nearest).

    The dtype is passed explicitly: ``mx.array`` turns a float64 NumPy array into float32 by default.
    """
    mx_type, np_type = DTYPES[dtype_name(dtype)]
    if isinstance(value, mx.array):
        return value.astype(mx_type)
    return mx.array(np.asarray(value, dtype=np_type), dtype=mx_type)


class ParamGroup(nn.Module):
    """Parameters named as in the spec, created from NumPy (or MLX) arrays."""

    def __init__(self, arrays: dict, dtype="float32"):
        super().__init__()
        for name, value in arrays.items():
            setattr(self, name, to_mlx(value, dtype))


def param_tree(arrays: Mapping, dtype="float32") -> nn.Module:
    """Nested modules whose parameter paths are the dotted names of ``arrays`` (e.g. ``experts.w1``)."""
    return common.param_tree(arrays, lambda leaves: ParamGroup(leaves, dtype), nn.Module)


def draw(rules: dict, shapes: dict, dtype) -> dict[str, mx.array]:
    """Arrays of the spec's initial distributions (``common.init_rules``) from MLX's generator (drawn in
    float32, MLX's random sampling type, then cast)."""
    out = {}
    for name, (rule, scale) in rules.items():
        shape = shapes[name]
        if rule == "uniform":
            value = mx.random.uniform(-scale, scale, shape)
        elif rule == "normal":
            value = mx.random.normal(shape) * scale
        else:
            value = mx.ones(shape) if rule == "ones" else mx.zeros(shape)
        out[name] = to_mlx(value, dtype)
    return out


def initial(owner: str, cfg, shapes: dict, arrays, dtype, prefix: str = "") -> dict:
    """The given ``arrays`` (checked against ``shapes``), else the spec's distributions drawn."""
    if arrays is not None:
        return common.checked_arrays(owner, arrays, shapes)
    return draw(common.init_rules(cfg, shapes, prefix), shapes, dtype)


class _Last:
    def __init__(self, routing, counts, avg_active, aux_loss):
        self.routing, self.counts, self.avg_active, self.aux_loss = routing, counts, avg_active, aux_loss


class _Routed(nn.Module):
    """What the routed modules share: the last routing's statistics and the auxiliary loss."""

    # The statistics are kept in one plain Python object (``_Last``): an ``mx.array`` attribute of a Module
    # would become a parameter (trained, saved, compared by ``load_weights(strict=True)``).

    def _record(self, routings: list, cfg) -> None:
        stats = [common.routing_stats(OPS, r) for r in routings]
        aux = common.balance_loss(OPS, routings, cfg)
        last = _Last(routings, [c for c, _ in stats], [a for _, a in stats], mx.array(0.0, dtype=self.dtype) if aux is None else aux)
        object.__setattr__(self, "_last", last)

    def _stat(self, name: str):
        last = self.__dict__.get("_last")
        if last is None:
            raise AttributeError(f"{type(self).__name__}.{name}: call the layer first")
        value = getattr(last, name)
        return value[0] if isinstance(self, DynaMoE) and isinstance(value, list) else value

    last_routing = property(lambda self: self._stat("routing"), doc="The last call's ``Routing`` (a list for the stacks).")
    last_counts = property(lambda self: self._stat("counts"), doc="Selections per expert in the last call (per layer).")
    last_avg_active = property(lambda self: self._stat("avg_active"), doc="Mean active experts per token (per layer).")
    aux_loss = property(lambda self: self._stat("aux_loss"), doc="``balance_weight`` x the balancing loss of the last call.")

    @property
    def dtype(self) -> mx.Dtype:
        return next(v for _, v in tree_flatten(self.parameters())).dtype

    def _noise(self, tokens: int, widths: list[int]):
        """Training-mode gate noise ``noise_std * N(0, 1)`` per layer from ``mx.random`` (else ``None``)."""
        sigma = float(self.router.noise_std)
        if not self.training or sigma == 0.0:
            return None
        return [(mx.random.normal((tokens, w)) * sigma).astype(self.dtype) for w in widths]


class DynaMoE(_Routed):
    """One DynaMoE layer (Eq. 1, 4-7): ``(..., d_model) -> (..., d_model)``, ``y = sum_{i in S(h)} w_i E_i(h)``
    over the dynamically selected experts (leading axes are flattened into the routing batch and restored).

    ``router`` is ``RouterConfig.kind`` (``"dynamic"``, ``"topk"``, ``"switch"``, ``"gshard"``,
    ``"expert_choice"``), or a ``RouterConfig`` (then the other router arguments stay at their defaults);
    the others are ``RouterConfig``'s fields, defaults and checks. ``forward(h, noise=None)``: ``noise``
    (N, E) replaces the drawn training noise (for parity with the spec). ``from_arrays(router, params,
    dtype)`` holds given spec arrays (``gate.weight`` (d, E), ``experts.w1`` (E, d, d_h), ``experts.b1``
    (E, d_h), ``experts.w2`` (E, d_h, d), ``experts.b2`` (E, d)).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        expert_hidden: int,
        *,
        tau: float = R["tau"],
        k_min: int = R["k_min"],
        k_max: int | None = R["k_max"],
        temperature: float = R["temperature"],
        noise_std: float = R["noise_std"],
        router: str | RouterConfig = R["kind"],
        top_k: int = R["top_k"],
        capacity_factor: float = R["capacity_factor"],
        balance_weight: float = R["balance_weight"],
        scope: str = R["scope"],
        combine: str = R["combine"],
        arrays: Mapping | None = None,
        dtype="float32",
    ):
        super().__init__()
        args = dict(tau=tau, k_min=k_min, k_max=k_max, temperature=temperature, noise_std=noise_std, top_k=top_k)
        args.update(capacity_factor=capacity_factor, balance_weight=balance_weight, scope=scope, combine=combine)
        routing = common.router_config("DynaMoE", router, num_experts, **args)
        self.config = common.layer_config("DynaMoE", "dynamoe", d_model, expert_hidden, num_experts, routing)
        self.router = routing
        self.d_model, self.num_experts, self.expert_hidden = d_model, num_experts, expert_hidden
        shapes = common.layer_shapes(self.config)
        groups = common.group_names(initial("DynaMoE", self.config, shapes, arrays, dtype, "layers.0."))
        self.gate = ParamGroup(groups["gate"], dtype)
        self.experts = ParamGroup(groups["experts"], dtype)

    @classmethod
    def from_arrays(cls, router: RouterConfig, params: Mapping, dtype="float32") -> DynaMoE:
        """A layer holding the spec arrays ``params`` (the names of ``common.DYNAMOE_LAYER_NAMES``)."""
        d, e, dh = common.dynamoe_sizes(params)
        return cls(d, e, dh, router=router, arrays=params, dtype=dtype)

    def weights(self) -> dict:
        e = self.experts
        return {"gate": self.gate.weight, "w1": e.w1, "b1": e.b1, "w2": e.w2, "b2": e.b2}

    def forward_with_routing(self, h, noise=None):
        """``(y, Routing)`` of ``spec.forward.dynamoe_layer``; the routing is over the flattened tokens."""
        tokens, lead = common.tokens_of(OPS, h, self.d_model)
        if noise is None:
            noise = self._noise(tokens.shape[0], [self.num_experts])
            noise = None if noise is None else noise[0]
        y, routing = F.dynamoe_layer(OPS, self.weights(), tokens, noise, self.router)
        self._record([routing], self.config)
        return y.reshape(*lead, self.d_model), routing

    def __call__(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]


class FeedForward(nn.Module):
    """The MLP baseline's block ``relu(h W1 + b1) W2 + b2`` (``spec.forward.feed_forward``):
    ``ffn.w1`` (d, hidden), ``ffn.b1`` (hidden,), ``ffn.w2`` (hidden, d), ``ffn.b2`` (d,)."""

    def __init__(self, d_model: int, hidden: int, *, arrays: Mapping | None = None, dtype="float32"):
        super().__init__()
        self.config = common.layer_config("FeedForward", "mlp", d_model, hidden)
        self.d_model, self.hidden = d_model, hidden
        arrays = initial("FeedForward", self.config, common.layer_shapes(self.config), arrays, dtype, "layers.0.")
        self.ffn = ParamGroup(common.under(arrays, "ffn."), dtype)

    @classmethod
    def from_arrays(cls, params: Mapping, dtype="float32") -> FeedForward:
        return cls(*common.feed_forward_sizes(params), arrays=params, dtype=dtype)

    def __call__(self, h):
        f = self.ffn
        return F.feed_forward(OPS, h, f.w1, f.b1, f.w2, f.b2)


def stack_modules(cfg, arrays: Mapping | None, dtype) -> dict:
    """The modules of a stack of ``cfg`` (a ``common.StackConfig`` or a ``ModelConfig``) in parameter order:
    ``pool`` (MoUE), ``layers`` (``DynaMoE``, ``FeedForward`` or MoUE's local experts), ``norm``; from the
    spec arrays ``arrays`` (``common.stack_shapes``) or drawn from MLX's generator."""
    shapes = common.stack_shapes(cfg)
    arrays = initial(type(cfg).__name__, cfg, shapes, arrays, dtype)
    modules: dict = {}
    if cfg.kind == "moue":
        modules["pool"] = param_tree(common.under(arrays, "pool."), dtype)
    layer = {"dynamoe": lambda p: DynaMoE.from_arrays(cfg.router, p, dtype), "mlp": lambda p: FeedForward.from_arrays(p, dtype)}
    make = layer.get(cfg.kind, lambda p: param_tree(p, dtype))
    modules["layers"] = [make(common.under(arrays, f"layers.{i}.")) for i in range(cfg.num_layers)]
    modules["norm"] = ParamGroup(common.under(arrays, "norm."), dtype)
    return modules


class _Stack(_Routed):
    """L residual layers and the final LayerNorm (``common.stack_forward``): ``(..., d) -> (..., d)``."""

    def _setup(self, config, arrays, dtype) -> None:
        self.config = config
        self.router = config.router
        self.d_model, self.num_layers = config.hidden_dim, config.num_layers
        for name, module in stack_modules(config, arrays, dtype).items():
            setattr(self, name, module)

    @classmethod
    def from_arrays(cls, cfg, params: Mapping, dtype="float32"):
        """A stack of ``cfg`` (a ``ModelConfig`` or ``common.StackConfig``) holding the spec arrays ``params``
        (``common.stack_shapes(cfg)``: ``layers.<i>.*``, ``pool.*`` for MoUE, ``norm.gamma``, ``norm.beta``)."""
        stack = cls.__new__(cls)
        nn.Module.__init__(stack)
        stack._setup(cfg if isinstance(cfg, common.StackConfig) else common.StackConfig.of(cfg), params, dtype)
        return stack

    def forward_with_routing(self, h, noises=None):
        """``(LayerNorm(h_L), routings)``; ``noises``: per-layer gate noise (N, E_l) replacing the drawn."""
        tokens, lead = common.tokens_of(OPS, h, self.d_model)
        if noises is None:
            noises = self._noise(tokens.shape[0], common.noise_widths(self.config))
        out, routings = common.stack_forward(OPS, dict(tree_flatten(self.parameters())), tokens, self.config, noises)
        self._record(routings, self.config)
        return out.reshape(*lead, self.d_model), routings

    def __call__(self, h, noises=None):
        return self.forward_with_routing(h, noises)[0]


class DynaMoEStack(_Stack):
    """The paper's network between its input projection and its head (Section 3.4): ``num_layers``
    residual ``DynaMoE`` layers ``h + F_l(h)`` with E_l experts from the schedule (``spec.schedules``;
    ``schedule``, ``e_min``, ``e_max`` are ``ScheduleConfig``'s), then the final LayerNorm (``norm``).
    ``expert_hidden`` defaults to ``ModelConfig.expert_hidden_ratio`` x d_model; ``router_args``:
    ``DynaMoE``'s router arguments. ``layers[i]`` are ``DynaMoE`` modules."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        *,
        schedule: str = S.name,
        e_min: int = S.e_min,
        e_max: int = S.e_max,
        expert_hidden: int | None = None,
        arrays: Mapping | None = None,
        dtype="float32",
        **router_args,
    ):
        super().__init__()
        config = common.stack_config("DynaMoEStack", "dynamoe", d_model, num_layers, schedule, e_min, e_max, expert_hidden, router_args)
        self._setup(config, arrays, dtype)


class MoUEStack(_Stack):
    """Mixture of Universal Experts (``spec.moue``): ``pool_size`` universal experts shared by every layer
    (layer l sees its staggered window of E_l of them, E_l from the schedule), the universal router with a
    ``trajectory_dim`` state, ``local_experts`` per layer, then the final LayerNorm; ``pool_size``,
    ``trajectory_dim``, ``stride``, ``local_experts``, ``exposure_correction`` are ``MoUEConfig``'s.
    ``aux_loss`` is ``balance_weight`` x UELB."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        *,
        pool_size: int = M.pool_size,
        trajectory_dim: int = M.trajectory_dim,
        stride: int | None = M.stride,
        local_experts: int = M.local_experts,
        exposure_correction: bool = M.exposure_correction,
        schedule: str = S.name,
        e_min: int = S.e_min,
        e_max: int = S.e_max,
        expert_hidden: int | None = None,
        arrays: Mapping | None = None,
        dtype="float32",
        **router_args,
    ):
        super().__init__()
        moue = dict(pool_size=pool_size, trajectory_dim=trajectory_dim, stride=stride, local_experts=local_experts)
        moue["exposure_correction"] = exposure_correction
        config = common.stack_config("MoUEStack", "moue", d_model, num_layers, schedule, e_min, e_max, expert_hidden, router_args, moue)
        self._setup(config, arrays, dtype)


class TransformerBlock(nn.Module):
    """One causal pre-LN Transformer block (Eq. 27-28, ``spec.transformer.transformer_block``),
    ``(B, T, d_model) -> (B, T, d_model)``::

        u  = h + MHSA(LN(h))
        h' = u + F(LN(u))

    ``num_heads`` heads of width ``d_model / num_heads`` (query, key, value, output maps with biases,
    ``attn.query.weight`` (d, d), ..., ``attn.out.bias`` (d,)), LayerNorms without affine parameters.
    ``feed_forward``: the ``DynaMoE`` or ``FeedForward`` module F (its parameters are under
    ``feed_forward.``; the spec's names without that prefix: ``spec_parameters()``); ``None`` makes
    ``DynaMoE(d_model, ScheduleConfig.e_max, ModelConfig.expert_hidden_ratio x d_model)``. The block adds
    no positions: add them to its first input (``spec.transformer.sinusoids(T, d)``, as the spec's model
    does after scaling the embedding by ``sqrt(d)``). ``arrays``: given attention arrays (``attn.*``); the
    feed-forward holds its own; ``dtype`` defaults to the feed-forward's (which is cast to it).

    ``__call__(h, noise=None)``: ``noise`` (B*T, E) replaces DynaMoE's training-mode gate noise. After each
    call: ``last_attention`` (B, heads, T, T), ``last_post_attention`` (u, (B*T, d): the probes' input,
    ``spec.probes``), ``last_routing``, and ``aux_loss`` (the DynaMoE's, zero for a FeedForward);
    ``feed_forward.last_counts`` / ``last_avg_active`` are its routing statistics. Like the other layers'
    statistics they are plain attributes, not parameters.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        feed_forward: DynaMoE | FeedForward | None = None,
        *,
        layer_norm_eps: float = ModelConfig.layer_norm_eps,
        arrays: Mapping | None = None,
        dtype=None,
    ):
        super().__init__()
        if feed_forward is None:
            feed_forward = DynaMoE(d_model, S.e_max, max(1, round(ModelConfig.expert_hidden_ratio * d_model)), dtype=dtype or "float32")
        if not isinstance(feed_forward, (DynaMoE, FeedForward)):
            raise TypeError(f"TransformerBlock's feed_forward is a DynaMoE or FeedForward module, not {type(feed_forward).__name__}")
        dtype = dtype_name(next(v for _, v in tree_flatten(feed_forward.parameters())).dtype if dtype is None else dtype)
        self.config = common.block_config("TransformerBlock", d_model, num_heads, layer_norm_eps, feed_forward.config)
        self.d_model, self.num_heads, self.layer_norm_eps = d_model, num_heads, self.config.layer_norm_eps
        shapes = common.attention_shapes(self.config)
        attn = initial("TransformerBlock", self.config, shapes, arrays, dtype, "layers.0.")
        self.attn = param_tree(common.under(attn, "attn."), dtype)
        feed_forward.set_dtype(DTYPES[dtype][0])
        self.feed_forward = feed_forward

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, params: Mapping, dtype="float32") -> TransformerBlock:
        """A block of ``cfg`` (its ``num_heads``, ``router``, ``layer_norm_eps``; ``kind`` ``"dynamoe"`` or
        ``"mlp"``) holding one layer's spec arrays ``params`` (``common.under(init_params(cfg, seed),
        "layers.<i>.")``: ``attn.*``, then ``gate.weight``, ``experts.*`` or ``ffn.*``)."""
        attn, ffn = common.split_block_arrays(params)
        if common.block_kind(cfg) == "dynamoe":
            feed_forward = DynaMoE.from_arrays(cfg.router, ffn, dtype)
        else:
            feed_forward = FeedForward.from_arrays(ffn, dtype)
        return cls(cfg.hidden_dim, cfg.num_heads, feed_forward, layer_norm_eps=cfg.layer_norm_eps, arrays=attn, dtype=dtype)

    def spec_parameters(self) -> dict[str, mx.array]:
        """``{spec name: array}`` in the spec's order (``attn.query.weight``, ..., then the feed-forward's)."""
        return {**{f"attn.{k}": v for k, v in tree_flatten(self.attn.parameters())}, **dict(tree_flatten(self.feed_forward.parameters()))}

    def _stat(self, name: str):
        last = self.__dict__.get("_last_block")
        if last is None:
            raise AttributeError(f"TransformerBlock.{name}: call the block first")
        return last[name]

    last_attention = property(lambda self: self._stat("attention"), doc="The last call's attention weights (B, heads, T, T).")
    last_post_attention = property(lambda self: self._stat("post_attention"), doc="The last call's u = h + MHSA(LN(h)) (B*T, d).")
    last_routing = property(lambda self: self._stat("routing"), doc="The last call's ``Routing`` (``None`` for a FeedForward).")

    @property
    def aux_loss(self) -> mx.array:
        if isinstance(self.feed_forward, DynaMoE):
            return self.feed_forward.aux_loss
        return mx.array(0.0, dtype=self.attn.query.weight.dtype)

    def forward_with_routing(self, h, noise=None):
        """``(h', Routing or None)``; the routing is over the B*T tokens."""
        if noise is not None and not isinstance(self.feed_forward, DynaMoE):
            raise ValueError("TransformerBlock: noise is gate noise, and a FeedForward has no gate")
        attn = dict(tree_flatten(self.attn.parameters()))
        allowed = T.causal_mask(OPS, common.sequence_length(h, self.d_model), h)
        run = partial(self._feed_forward, noise=noise)
        out, weights, u, (routing,) = T.transformer_block(OPS, attn, h, self.num_heads, allowed, self.layer_norm_eps, run)
        object.__setattr__(self, "_last_block", {"attention": weights, "post_attention": u, "routing": routing})
        return out, routing

    def _feed_forward(self, x, noise=None):
        """``(F(x), Routing or None)`` on the tokens ``LN(u)``."""
        if isinstance(self.feed_forward, DynaMoE):
            return self.feed_forward.forward_with_routing(x, noise)
        return self.feed_forward(x), None

    def __call__(self, h, noise=None):
        return self.forward_with_routing(h, noise)[0]
