"""Keras layers of DynaMoE: ``DynaMoE`` (one layer), ``FeedForward`` (the MLP baseline's block),
``DynaMoEStack`` and ``MoUEStack`` (the paper's residual stacks with their final LayerNorm),
``TransformerBlock`` (a causal pre-LN attention block around a ``DynaMoE`` or ``FeedForward``).

Each is a ``keras.layers.Layer`` built from sizes, registered serialisable (package ``dynamoe``:
``get_config``/``from_config``, ``.keras`` files), usable in ``keras.Sequential`` and the functional API
and trained by ``model.fit``, on Keras's JAX and PyTorch backends. It initialises itself with the spec's
distributions (``spec.init.init_rule``) from Keras's initialisers (``keras.utils.set_random_seed``), and
with ``training=True`` draws its gate noise (sigma = ``noise_std``) from a ``keras.random.SeedGenerator``
(``seed``); at inference none. Given arrays (``from_arrays``, or ``arrays=``) and noise (``noise=`` /
``noises=``) it evaluates the spec's math and equals the float64 reference. A router's balancing loss
(``balance_weight`` > 0) is added with ``add_loss`` (``model.fit`` adds it to the loss). The last call's
routing is in non-trainable variables: ``last_counts`` (selections per expert; a list per layer for the
stacks) and ``last_avg_active`` (active experts per token; per layer for the stacks).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import keras
import numpy as np

from backends import common
from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.config import ModelConfig, MoUEConfig, RouterConfig, ScheduleConfig

from .configs import to_dict
from .ops import KerasOps

OPS = KerasOps()
DTYPES = ("float32", "float64")
R, S, M = common.ROUTER_DEFAULTS, ScheduleConfig, MoUEConfig


def float_dtype(dtype) -> str:
    """``"float32"`` or ``"float64"``; asking for float64 on JAX switches on ``jax_enable_x64``.

    Keras has no setting of its own for 64-bit floats, and JAX silently makes float32 arrays of float64
    requests until ``jax_enable_x64`` is set (process-wide; float32 models are unaffected, their dtypes
    are explicit). This is the only JAX call in the model code.
    """
    name = getattr(dtype, "name", dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if name == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
    return name


class ArrayInitializer(keras.initializers.Initializer):
    """Initialises a weight with a given NumPy array, rounded to the weight's dtype by NumPy (no device
    computation: Keras's random initialisers compile one kernel per shape on JAX, seconds per model)."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(f"initial array of shape {self.value.shape} for a weight of shape {tuple(shape)}")
        return np.array(self.value, dtype=keras.backend.standardize_dtype(dtype))


def keras_name(spec_name: str) -> str:
    """A weight's Keras name: the spec's name with ``_`` for ``.`` (PyTorch refuses dots in parameter
    names, and Keras on PyTorch registers every variable under its path); the spec's names have no ``_``."""
    return spec_name.replace(".", "_")


def spec_name(keras_name: str) -> str:
    return keras_name.replace("_", ".")


def initializer(rule: str, scale: float):
    """The Keras initialiser of a ``spec.init.init_rule``."""
    if rule == "uniform":
        return keras.initializers.RandomUniform(-scale, scale)
    if rule == "normal":
        return keras.initializers.RandomNormal(0.0, scale)
    return keras.initializers.Ones() if rule == "ones" else keras.initializers.Zeros()


class _SpecLayer(keras.layers.Layer):
    """A layer whose weights are named as in the spec (Keras names ``experts_w1``, ...), made at
    construction (its sizes are known) from given arrays or the spec's distributions."""

    OWNER = "layer"

    def _add_spec_weights(self, cfg, shapes: dict, arrays, prefix: str = "") -> None:
        dtype = float_dtype(self.variable_dtype)
        arrays = None if arrays is None else common.checked_arrays(self.OWNER, arrays, shapes)
        rules = common.init_rules(cfg, shapes, prefix)
        for name, shape in shapes.items():
            init = ArrayInitializer(arrays[name]) if arrays is not None else initializer(*rules[name])
            self.add_weight(shape=shape, initializer=init, name=keras_name(name), dtype=dtype)
        self._spec_names = tuple(shapes)

    def _add_stat(self, name: str, shape: tuple):
        return self.add_weight(shape=shape, initializer="zeros", name=name, dtype=self.variable_dtype, trainable=False)

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` of the layer's parameters (e.g. ``{"experts.w1": ...}``)."""
        own = {spec_name(v.name): v for v in self._trainable_variables}
        return {name: own[name] for name in self._spec_names}

    def set_arrays(self, arrays: dict) -> None:
        """Assign NumPy arrays under the spec's names, rounded to the weights' dtype by NumPy."""
        variables = self.spec_variables()
        for key, value in arrays.items():
            variable = variables[key]
            value = np.asarray(value, dtype=variable.dtype)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{self.name}: {variable.name!r} has shape {tuple(variable.shape)}, got {value.shape}")
            variable.assign(value)

    def values(self) -> dict:
        """The parameters' values under the spec's names (inside ``stateless_call``, the values handed in)."""
        return {name: v.value for name, v in self.spec_variables().items()}

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def _noise(self, tokens: int, widths: list[int], training):
        """Training-mode gate noise ``noise_std * N(0, 1)`` per layer from the layer's ``SeedGenerator``."""
        sigma = float(self.router.noise_std)
        if not training or sigma == 0.0:
            return None
        return [keras.random.normal((tokens, w), stddev=sigma, dtype=self.compute_dtype, seed=self.seed_generator) for w in widths]

    def _record(self, routings: list, cfg) -> None:
        counts, active = zip(*(common.routing_stats(OPS, r) for r in routings))
        for variable, value in zip(self._count_variables, counts):
            variable.assign(keras.ops.cast(value, variable.dtype))
        self._active_variable.assign(keras.ops.cast(keras.ops.stack(active) if len(active) > 1 else active[0], self._active_variable.dtype))
        aux = common.balance_loss(OPS, routings, cfg)
        if aux is not None:
            self.add_loss(aux)


@keras.saving.register_keras_serializable(package="dynamoe")
class DynaMoE(_SpecLayer):
    """One DynaMoE layer (Eq. 1, 4-7): ``(..., d_model) -> (..., d_model)``, ``y = sum_{i in S(h)} w_i E_i(h)``
    over the dynamically selected experts (leading axes are flattened into the routing batch and restored).

    ``router`` is ``RouterConfig.kind`` (``"dynamic"``, ``"topk"``, ``"switch"``, ``"gshard"``,
    ``"expert_choice"``), or a ``RouterConfig`` or its fields as a dict (what ``get_config`` stores; the
    other router arguments then stay at their defaults); the others are ``RouterConfig``'s fields,
    defaults and checks. ``call(h, noise=None, training=None)``: ``noise`` (N, E) replaces the drawn
    training noise. ``from_arrays(router, params, dtype)`` holds given spec arrays (``gate.weight`` (d, E),
    ``experts.w1`` (E, d, d_h), ``experts.b1`` (E, d_h), ``experts.w2`` (E, d_h, d), ``experts.b2`` (E, d)).
    """

    OWNER = "DynaMoE"

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
        router: str | RouterConfig | dict = R["kind"],
        top_k: int = R["top_k"],
        capacity_factor: float = R["capacity_factor"],
        balance_weight: float = R["balance_weight"],
        scope: str = R["scope"],
        combine: str = R["combine"],
        arrays: Mapping | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        args = dict(tau=tau, k_min=k_min, k_max=k_max, temperature=temperature, noise_std=noise_std, top_k=top_k)
        args.update(capacity_factor=capacity_factor, balance_weight=balance_weight, scope=scope, combine=combine)
        routing = common.router_config("DynaMoE", router, num_experts, **args)
        config = common.layer_config("DynaMoE", "dynamoe", d_model, expert_hidden, num_experts, routing)
        super().__init__(**kwargs)
        self.config, self.router, self.seed = config, routing, seed
        self.d_model, self.num_experts, self.expert_hidden = d_model, num_experts, expert_hidden
        self._add_spec_weights(config, common.layer_shapes(config), arrays, "layers.0.")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._count_variables = [self._add_stat("last_counts", (num_experts,))]
        self._active_variable = self._add_stat("last_avg_active", ())
        self.built = True

    @classmethod
    def from_arrays(cls, router: RouterConfig, params: Mapping, dtype="float32", **kwargs) -> DynaMoE:
        """A layer holding the spec arrays ``params`` (the names of ``common.DYNAMOE_LAYER_NAMES``)."""
        d, e, dh = common.dynamoe_sizes(params)
        return cls(d, e, dh, router=router, arrays=params, dtype=float_dtype(dtype), **kwargs)

    @property
    def last_counts(self):
        return self._count_variables[0]

    @property
    def last_avg_active(self):
        return self._active_variable

    def forward_with_routing(self, h, noise=None, training=None):
        """``(y, Routing)`` of ``spec.forward.dynamoe_layer``; the routing is over the flattened tokens."""
        tokens, lead = common.tokens_of(OPS, h, self.d_model)
        if noise is None:
            noise = self._noise(keras.ops.shape(tokens)[0], [self.num_experts], training)
            noise = None if noise is None else noise[0]
        p = self.values()
        weights = {"gate": p["gate.weight"], **{k: p["experts." + k] for k in ("w1", "b1", "w2", "b2")}}
        y, routing = F.dynamoe_layer(OPS, weights, tokens, noise, self.router)
        self._record([routing], self.config)
        return keras.ops.reshape(y, (*lead, self.d_model)), routing

    def call(self, inputs, noise=None, training=None):
        return self.forward_with_routing(inputs, noise, training)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            num_experts=self.num_experts,
            expert_hidden=self.expert_hidden,
            router=to_dict(self.router),
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="dynamoe")
class FeedForward(_SpecLayer):
    """The MLP baseline's block ``relu(h W1 + b1) W2 + b2`` (``spec.forward.feed_forward``):
    ``ffn.w1`` (d, hidden), ``ffn.b1`` (hidden,), ``ffn.w2`` (hidden, d), ``ffn.b2`` (d,)."""

    OWNER = "FeedForward"

    def __init__(self, d_model: int, hidden: int, *, arrays: Mapping | None = None, **kwargs):
        config = common.layer_config("FeedForward", "mlp", d_model, hidden)
        super().__init__(**kwargs)
        self.config, self.d_model, self.hidden = config, d_model, hidden
        self._add_spec_weights(config, common.layer_shapes(config), arrays, "layers.0.")
        self.built = True

    @classmethod
    def from_arrays(cls, params: Mapping, dtype="float32", **kwargs) -> FeedForward:
        return cls(*common.feed_forward_sizes(params), arrays=params, dtype=float_dtype(dtype), **kwargs)

    def call(self, inputs):
        p = self.values()
        return F.feed_forward(OPS, inputs, p["ffn.w1"], p["ffn.b1"], p["ffn.w2"], p["ffn.b2"])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, hidden=self.hidden)
        return config


class _Stack(_SpecLayer):
    """L residual layers and the final LayerNorm (``common.stack_forward``): ``(..., d) -> (..., d)``.
    DynaMoE's layers are ``DynaMoE`` sublayers (``layers_<i>``), the MLP's ``FeedForward``; MoUE's pool,
    local experts and the LayerNorm are the stack's own weights, under the spec's names."""

    OWNER = "stack"

    def _setup(self, config, arrays, seed) -> None:
        self.config, self.router, self.seed = config, config.router, seed
        self.d_model, self.num_layers = config.hidden_dim, config.num_layers
        shapes = common.stack_shapes(config)
        arrays = None if arrays is None else common.checked_arrays(type(self).__name__, arrays, shapes)
        self.blocks = []
        if config.kind in ("dynamoe", "mlp"):
            for i in range(config.num_layers):
                given = None if arrays is None else common.under(arrays, f"layers.{i}.")
                if config.kind == "dynamoe":
                    e = config.experts_per_layer()[i]
                    block = DynaMoE(
                        config.hidden_dim,
                        e,
                        config.expert_hidden,
                        router=config.router,
                        arrays=given,
                        dtype=self.dtype_policy,
                        name=f"layers_{i}",
                    )
                else:
                    block = FeedForward(config.hidden_dim, config.mlp_hidden, arrays=given, dtype=self.dtype_policy, name=f"layers_{i}")
                self.blocks.append(block)
            shapes = {name: shape for name, shape in shapes.items() if not name.startswith("layers.")}
        own = None if arrays is None else {name: arrays[name] for name in shapes}
        self._add_spec_weights(config, shapes, own)
        self._all_names = tuple(common.stack_shapes(config))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._count_variables = [self._add_stat(f"last_counts_{i}", (w,)) for i, w in enumerate(common.noise_widths(config))]
        self._active_variable = self._add_stat("last_avg_active", (len(self._count_variables),)) if self._count_variables else None
        self.built = True

    @classmethod
    def from_arrays(cls, cfg, params: Mapping, dtype="float32", **kwargs):
        """A stack of ``cfg`` (a ``ModelConfig`` or ``common.StackConfig``) holding the spec arrays ``params``
        (``common.stack_shapes(cfg)``: ``layers.<i>.*``, ``pool.*`` for MoUE, ``norm.gamma``, ``norm.beta``)."""
        stack = cls.__new__(cls)
        keras.layers.Layer.__init__(stack, dtype=float_dtype(dtype), **kwargs)
        stack._setup(cfg if isinstance(cfg, common.StackConfig) else common.StackConfig.of(cfg), params, None)
        return stack

    @property
    def last_counts(self) -> list:
        return list(self._count_variables)

    @property
    def last_avg_active(self):
        return self._active_variable

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` in ``common.stack_shapes`` order (the blocks' under ``layers.<i>.``)."""
        own = super().spec_variables()
        for i, block in enumerate(self.blocks):
            own.update({f"layers.{i}.{name}": v for name, v in block.spec_variables().items()})
        return {name: own[name] for name in self._all_names}

    def forward_with_routing(self, h, noises=None, training=None):
        """``(LayerNorm(h_L), routings)``; ``noises``: per-layer gate noise (N, E_l) replacing the drawn."""
        tokens, lead = common.tokens_of(OPS, h, self.d_model)
        if noises is None and self._count_variables:
            noises = self._noise(keras.ops.shape(tokens)[0], common.noise_widths(self.config), training)
        out, routings = common.stack_forward(OPS, self.values(), tokens, self.config, noises)
        if routings:
            self._record(routings, self.config)
        return keras.ops.reshape(out, (*lead, self.d_model)), routings

    def call(self, inputs, noises=None, training=None):
        return self.forward_with_routing(inputs, noises, training)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        c = self.config
        config.update(
            d_model=c.hidden_dim, num_layers=c.num_layers, schedule=c.schedule.name, e_min=c.schedule.e_min, e_max=c.schedule.e_max
        )
        config.update(expert_hidden=c.expert_hidden, router=to_dict(c.router), seed=self.seed)
        if c.moue is not None:
            config.update(to_dict(c.moue))
        return config


@keras.saving.register_keras_serializable(package="dynamoe")
class DynaMoEStack(_Stack):
    """The paper's network between its input projection and its head (Section 3.4): ``num_layers``
    residual ``DynaMoE`` layers ``h + F_l(h)`` with E_l experts from the schedule (``spec.schedules``;
    ``schedule``, ``e_min``, ``e_max`` are ``ScheduleConfig``'s), then the final LayerNorm (``norm``).
    ``expert_hidden`` defaults to ``ModelConfig.expert_hidden_ratio`` x d_model; ``router_args``:
    ``DynaMoE``'s router arguments; other keywords go to ``keras.layers.Layer`` (``name``, ``dtype``)."""

    OWNER = "DynaMoEStack"

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
        seed: int | None = None,
        **kwargs,
    ):
        router_args = {name: kwargs.pop(name) for name in common.ROUTER_ARGUMENTS if name in kwargs}
        config = common.stack_config("DynaMoEStack", "dynamoe", d_model, num_layers, schedule, e_min, e_max, expert_hidden, router_args)
        super().__init__(**kwargs)
        self._setup(config, arrays, seed)


@keras.saving.register_keras_serializable(package="dynamoe")
class MoUEStack(_Stack):
    """Mixture of Universal Experts (``spec.moue``): ``pool_size`` universal experts shared by every layer
    (layer l sees its staggered window of E_l of them, E_l from the schedule), the universal router with a
    ``trajectory_dim`` state, ``local_experts`` per layer, then the final LayerNorm; ``pool_size``,
    ``trajectory_dim``, ``stride``, ``local_experts``, ``exposure_correction`` are ``MoUEConfig``'s. Its
    balancing loss is ``balance_weight`` x UELB."""

    OWNER = "MoUEStack"

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
        seed: int | None = None,
        **kwargs,
    ):
        router_args = {name: kwargs.pop(name) for name in common.ROUTER_ARGUMENTS if name in kwargs}
        moue = dict(pool_size=pool_size, trajectory_dim=trajectory_dim, stride=stride, local_experts=local_experts)
        moue["exposure_correction"] = exposure_correction
        config = common.stack_config("MoUEStack", "moue", d_model, num_layers, schedule, e_min, e_max, expert_hidden, router_args, moue)
        super().__init__(**kwargs)
        self._setup(config, arrays, seed)


@keras.saving.register_keras_serializable(package="dynamoe")
class TransformerBlock(_SpecLayer):
    """One causal pre-LN Transformer block (Eq. 27-28, ``spec.transformer.transformer_block``),
    ``(B, T, d_model) -> (B, T, d_model)``::

        u  = h + MHSA(LN(h))
        h' = u + F(LN(u))

    ``num_heads`` heads of width ``d_model / num_heads`` (query, key, value, output maps with biases,
    ``attn.query.weight`` (d, d), ..., ``attn.out.bias`` (d,)), LayerNorms without affine parameters.
    ``feed_forward``: the ``DynaMoE`` or ``FeedForward`` sublayer F (``spec_variables()``: the attention's
    and its weights under the spec's names); ``None`` makes ``DynaMoE(d_model, ScheduleConfig.e_max,
    ModelConfig.expert_hidden_ratio x d_model)``. The block adds no positions: add them to its first input
    (``spec.transformer.sinusoids(T, d)``, as the spec's model does after scaling the embedding by
    ``sqrt(d)``). ``arrays``: given attention arrays (``attn.*``); the feed-forward holds its own; ``dtype``
    defaults to the feed-forward's; other keywords go to ``keras.layers.Layer``.

    ``call(h, noise=None, training=None)``: ``noise`` (B*T, E) replaces DynaMoE's training-mode gate noise;
    the DynaMoE's balancing loss is its ``add_loss`` (in ``block.losses``; ``model.fit`` adds it), its
    statistics ``feed_forward.last_counts`` / ``last_avg_active``. After an eager call (``block(h)``, not
    inside ``fit`` or ``predict``, whose traced values are not arrays): ``last_attention`` (B, heads, T, T)
    and ``last_post_attention`` (u, (B*T, d): the probes' input, ``spec.probes``), ``last_routing``.
    """

    OWNER = "TransformerBlock"

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        feed_forward: DynaMoE | FeedForward | None = None,
        *,
        layer_norm_eps: float = ModelConfig.layer_norm_eps,
        arrays: Mapping | None = None,
        **kwargs,
    ):
        if feed_forward is None:
            dtype = kwargs.get("dtype")
            hidden = max(1, round(ModelConfig.expert_hidden_ratio * d_model))
            feed_forward = DynaMoE(d_model, S.e_max, hidden, **({} if dtype is None else {"dtype": dtype}))
        if not isinstance(feed_forward, (DynaMoE, FeedForward)):
            raise TypeError(f"TransformerBlock's feed_forward is a DynaMoE or FeedForward layer, not {type(feed_forward).__name__}")
        config = common.block_config("TransformerBlock", d_model, num_heads, layer_norm_eps, feed_forward.config)
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = feed_forward.dtype_policy
        super().__init__(**kwargs)
        if float_dtype(self.variable_dtype) != float_dtype(feed_forward.variable_dtype):
            dtypes = f"{self.variable_dtype}, its feed-forward {feed_forward.variable_dtype}"
            raise ValueError(f"TransformerBlock's weights are {dtypes}: give them one dtype")
        self.config, self.d_model, self.num_heads, self.layer_norm_eps = config, d_model, num_heads, config.layer_norm_eps
        self._add_spec_weights(config, common.attention_shapes(config), arrays, "layers.0.")
        self.feed_forward = feed_forward
        self.last_attention = self.last_post_attention = self.last_routing = None
        self.built = True

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, params: Mapping, dtype="float32", **kwargs) -> TransformerBlock:
        """A block of ``cfg`` (its ``num_heads``, ``router``, ``layer_norm_eps``; ``kind`` ``"dynamoe"`` or
        ``"mlp"``) holding one layer's spec arrays ``params`` (``common.under(init_params(cfg, seed),
        "layers.<i>.")``: ``attn.*``, then ``gate.weight``, ``experts.*`` or ``ffn.*``)."""
        attn, ffn = common.split_block_arrays(params)
        if common.block_kind(cfg) == "dynamoe":
            feed_forward = DynaMoE.from_arrays(cfg.router, ffn, dtype)
        else:
            feed_forward = FeedForward.from_arrays(ffn, dtype)
        eps, dtype = cfg.layer_norm_eps, float_dtype(dtype)
        return cls(cfg.hidden_dim, cfg.num_heads, feed_forward, layer_norm_eps=eps, arrays=attn, dtype=dtype, **kwargs)

    def spec_variables(self) -> dict:
        """``{spec name: keras.Variable}`` in the spec's order (``attn.query.weight``, ..., then the feed-forward's)."""
        return {**super().spec_variables(), **self.feed_forward.spec_variables()}

    def forward_with_routing(self, h, noise=None, training=None):
        """``(h', Routing or None)``; the routing is over the B*T tokens."""
        if noise is not None and not isinstance(self.feed_forward, DynaMoE):
            raise ValueError("TransformerBlock: noise is gate noise, and a FeedForward has no gate")
        attn = {name[len("attn.") :]: v.value for name, v in super().spec_variables().items()}
        allowed = T.causal_mask(OPS, common.sequence_length(h, self.d_model), h)
        run = partial(self._feed_forward, noise=noise, training=training)
        out, weights, u, (routing,) = T.transformer_block(OPS, attn, h, self.num_heads, allowed, self.layer_norm_eps, run)
        self.last_attention, self.last_post_attention, self.last_routing = weights, u, routing
        return out, routing

    def _feed_forward(self, x, noise=None, training=None):
        """``(F(x), Routing or None)`` on the tokens ``LN(u)``."""
        if isinstance(self.feed_forward, DynaMoE):
            return self.feed_forward.forward_with_routing(x, noise, training)
        return self.feed_forward(x), None

    def call(self, inputs, noise=None, training=None):
        return self.forward_with_routing(inputs, noise, training)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(d_model=self.d_model, num_heads=self.num_heads, layer_norm_eps=self.layer_norm_eps)
        config["feed_forward"] = keras.saving.serialize_keras_object(self.feed_forward)
        return config

    @classmethod
    def from_config(cls, config: dict) -> TransformerBlock:
        config = dict(config)
        config["feed_forward"] = keras.saving.deserialize_keras_object(config["feed_forward"])
        return cls(**config)
