"""The names every framework backend exposes (``backends.torch``, ``backends.keras``, ``backends.mlx``), as
``typing.Protocol``s: ``Backend`` is the module, the others its classes' instances (constructors included).

Each backend is thin: its layers (``DynaMoE``, ``FeedForward``, ``DynaMoEStack``, ``MoUEStack``, ``TransformerBlock``: the
framework's own modules, built from sizes, also usable in a user's model), the networks built from them,
its autodiff and optimiser, and an ``ops`` class; the math is ``backends.spec``'s. Arrays cross the
boundary as NumPy, parameters under the spec's names (``spec.init.param_shapes``); a layer holds the names inside it (``layers.<i>.``
stripped: ``common.under(params, "layers.0.")``).

A backend's function or constructor may add parameters after the contract's, each with a default (the
PyTorch backend's ``device=None``, Keras's ``**kwargs`` such as ``name``). Calling an instance
(``__call__``) runs the framework's forward (``forward`` in PyTorch, ``call`` in Keras), so it is
documented here but its signature is the framework's. ``tests/test_backend_contract.py`` checks every
installed backend against these Protocols.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, Protocol, runtime_checkable

import numpy as np

from backends.spec.config import ModelConfig, MoUEConfig, RouterConfig, ScheduleConfig, TrainConfig
from backends.spec.routers import Routing

SpecArrays = Mapping[str, np.ndarray]  # NumPy arrays under the spec's parameter names
WeightsPath = str | PathLike


_R = {f.name: getattr(RouterConfig, f.name) for f in dataclasses.fields(RouterConfig)}  # the defaults, from the spec
_S, _M = ScheduleConfig, MoUEConfig


@runtime_checkable
class DynaMoELike(Protocol):
    """One DynaMoE layer (Eq. 1, 4-7), ``(..., d_model) -> (..., d_model)``, in the framework's own idiom:
    built from sizes and initialised from the framework's generator by the spec's distributions, gate noise
    (sigma = ``noise_std``) drawn in training mode. The router arguments are ``RouterConfig``'s (``router``
    is its ``kind``, or a whole ``RouterConfig``), validated by it before any array is made.

    ``from_arrays`` holds given spec arrays instead: ``gate.weight`` (d, E), ``experts.w1`` (E, d, d_h),
    ``experts.b1`` (E, d_h), ``experts.w2`` (E, d_h, d), ``experts.b2`` (E, d). Given those arrays and the
    noise, it is the spec's layer (``spec.forward.dynamoe_layer``)."""

    router: RouterConfig

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        expert_hidden: int,
        *,
        tau: float = _R["tau"],
        k_min: int = _R["k_min"],
        k_max: int | None = _R["k_max"],
        temperature: float = _R["temperature"],
        noise_std: float = _R["noise_std"],
        router: str | RouterConfig = _R["kind"],
        top_k: int = _R["top_k"],
        capacity_factor: float = _R["capacity_factor"],
        balance_weight: float = _R["balance_weight"],
        scope: str = _R["scope"],
        combine: str = _R["combine"],
        arrays: SpecArrays | None = None,
    ) -> None: ...

    @classmethod
    def from_arrays(cls, router: RouterConfig, params: SpecArrays, dtype: str = "float32") -> DynaMoELike: ...

    def forward_with_routing(self, h, noise=None) -> tuple[Any, Routing]:
        """``(y, Routing)`` for tokens ``h`` (..., d); ``noise`` (N, E) replaces the drawn training noise
        (Eq. 7) and is added in any mode; the routing is over the N flattened tokens."""
        ...

    def __call__(self, h, noise=None) -> Any:
        """``y`` of ``forward_with_routing`` (Keras: also ``training=``)."""
        ...


@runtime_checkable
class FeedForwardLike(Protocol):
    """The MLP baseline's block ``relu(h W1 + b1) W2 + b2``: ``ffn.w1`` (d, hidden), ``ffn.b1`` (hidden,),
    ``ffn.w2`` (hidden, d), ``ffn.b2`` (d,); built from sizes or ``from_arrays``."""

    def __init__(self, d_model: int, hidden: int, *, arrays: SpecArrays | None = None) -> None: ...

    @classmethod
    def from_arrays(cls, params: SpecArrays, dtype: str = "float32") -> FeedForwardLike: ...

    def __call__(self, h) -> Any: ...


@runtime_checkable
class DynaMoEStackLike(Protocol):
    """The paper's residual stack and its final LayerNorm, ``(..., d) -> (..., d)``: ``num_layers`` DynaMoE
    layers with E_l experts of the schedule (``ScheduleConfig``'s arguments); ``expert_hidden`` ``None``
    means ``ModelConfig.expert_hidden_ratio`` x d_model. After them, each backend takes ``DynaMoE``'s
    router arguments (``**router_args``). ``from_arrays(cfg, params)``: the stack of a ``ModelConfig`` (or
    ``common.StackConfig``) holding ``common.stack_shapes(cfg)``'s spec arrays."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        *,
        schedule: str = _S.name,
        e_min: int = _S.e_min,
        e_max: int = _S.e_max,
        expert_hidden: int | None = None,
        arrays: SpecArrays | None = None,
    ) -> None: ...

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, params: SpecArrays, dtype: str = "float32") -> DynaMoEStackLike: ...

    def forward_with_routing(self, h, noises=None) -> tuple[Any, list[Routing]]:
        """``(LayerNorm(h_L), routings)``; ``noises``: per-layer gate noise replacing the drawn."""
        ...

    def __call__(self, h, noises=None) -> Any: ...


@runtime_checkable
class MoUEStackLike(Protocol):
    """Mixture of Universal Experts (``spec.moue``): the pool shared by the layers, its universal router and
    trajectory state (``MoUEConfig``'s arguments), the final LayerNorm; then ``DynaMoEStack``'s."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        *,
        pool_size: int = _M.pool_size,
        trajectory_dim: int = _M.trajectory_dim,
        stride: int | None = _M.stride,
        local_experts: int = _M.local_experts,
        exposure_correction: bool = _M.exposure_correction,
        schedule: str = _S.name,
        e_min: int = _S.e_min,
        e_max: int = _S.e_max,
        expert_hidden: int | None = None,
        arrays: SpecArrays | None = None,
    ) -> None: ...

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, params: SpecArrays, dtype: str = "float32") -> MoUEStackLike: ...

    def forward_with_routing(self, h, noises=None) -> tuple[Any, list[Routing]]: ...

    def __call__(self, h, noises=None) -> Any: ...


@runtime_checkable
class TransformerBlockLike(Protocol):
    """One causal pre-LN Transformer block (Eq. 27-28: ``u = h + MHSA(LN(h))``, ``h' = u + F(LN(u))``),
    ``(B, T, d_model) -> (B, T, d_model)``, around the backend's ``DynaMoE`` or ``FeedForward``
    ``feed_forward`` (``None``: a ``DynaMoE`` of ``ScheduleConfig.e_max`` experts). It adds no positions.
    ``arrays``: the attention's spec arrays (``attn.query.weight`` (d, d), ..., ``attn.out.bias`` (d,));
    ``from_arrays(cfg, params)``: a block of ``cfg`` holding one Transformer layer's spec arrays
    (``common.under(params, "layers.<i>.")``). After each call: ``last_attention`` (B, heads, T, T) and
    ``last_post_attention`` (u, (B*T, d)). Given those arrays and the noise, it is the spec's block
    (``spec.transformer.transformer_block``)."""

    num_heads: int

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        feed_forward: Any = None,
        *,
        layer_norm_eps: float = ModelConfig.layer_norm_eps,
        arrays: SpecArrays | None = None,
    ) -> None: ...

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, params: SpecArrays, dtype: str = "float32") -> TransformerBlockLike: ...

    def forward_with_routing(self, h, noise=None) -> tuple[Any, Routing | None]:
        """``(h', Routing or None)``; ``noise`` (B*T, E) replaces the DynaMoE's drawn training noise."""
        ...

    def __call__(self, h, noise=None) -> Any: ...


@runtime_checkable
class ModelLike(Protocol):
    """A network of ``cfg`` (``DynaMoEModel``, ``MoUEModel``, ``MLPModel``) holding ``params`` (all of
    ``spec.init.param_shapes(cfg)``) in ``dtype`` (``"float32"`` or ``"float64"``)."""

    cfg: ModelConfig

    def __init__(self, cfg: ModelConfig, params: SpecArrays, dtype: str = "float32") -> None: ...

    def forward_with_routing(self, x, noises=None) -> tuple[Any, list[Routing]]:
        """``(logits, routings)`` via ``spec.forward.model_forward``; ``noises``: per-layer gate noise."""
        ...

    def hidden(self, x, noises=None) -> tuple[Any, list[Routing]]:
        """``(LayerNorm(h_L), routings)``: the normalised states (N, d) the head reads (``lm``: N = B*T)."""
        ...

    def __call__(self, x, noises=None) -> Any:
        """The logits."""
        ...


@runtime_checkable
class TrainerLike(Protocol):
    """One AdamW step (``spec.optim.adamw_update``) at a time; ``compile`` asks for the framework's compiler."""

    model: ModelLike
    cfg: TrainConfig

    def __init__(self, model: ModelLike, cfg: TrainConfig, compile: bool = False) -> None: ...

    def step(self, x, y, noises, lr: float) -> Any:
        """One step on batch (x, y) with per-layer gate noise; the loss as a framework scalar (no host
        sync; ``to_float`` converts it)."""
        ...

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's state as NumPy under ``spec.optim.optimizer_state_names`` (``steps``, ``m.<name>``, ``v.<name>``)."""
        ...

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``optimizer_state()``'s arrays: the same steps bit for bit (checkpoints)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A framework backend module. ``NAME`` is its name in ``backends.BACKENDS``; ``OPS`` its
    implementation of the ``spec.ops`` primitives."""

    NAME: str
    OPS: Any
    DynaMoE: type[DynaMoELike]
    FeedForward: type[FeedForwardLike]
    DynaMoEStack: type[DynaMoEStackLike]
    MoUEStack: type[MoUEStackLike]
    TransformerBlock: type[TransformerBlockLike]
    DynaMoEModel: type[ModelLike]
    MoUEModel: type[ModelLike]
    MLPModel: type[ModelLike]
    Trainer: type[TrainerLike]

    @staticmethod
    def build_model(cfg: ModelConfig, params: SpecArrays, dtype: str = "float32") -> ModelLike:
        """The network of ``cfg.kind`` holding ``params`` (names and shapes checked, ``ValueError`` naming them)."""
        ...

    @staticmethod
    def export_params(model: ModelLike) -> dict[str, np.ndarray]:
        """The parameters back as NumPy, under the spec's names, in the model's dtype."""
        ...

    @staticmethod
    def save_weights(model: ModelLike, path: WeightsPath) -> None:
        """Write ``export_params(model)`` to the ``.npz`` file ``path`` (readable by every backend)."""
        ...

    @staticmethod
    def load_weights(model: ModelLike, path: WeightsPath) -> ModelLike:
        """Put a ``save_weights`` file of any backend into ``model`` (checked against its config) and return it."""
        ...

    @staticmethod
    def to_tensor(model: ModelLike, x) -> Any:
        """Inputs as the framework's tensors for ``model``: token ids as integers, features in its dtype."""
        ...

    @staticmethod
    def labels_tensor(model: ModelLike, y) -> Any:
        """Integer class or next-token labels as the framework's tensor for ``model``."""
        ...

    @staticmethod
    def noise_tensors(model: ModelLike, noises: Sequence[np.ndarray] | None) -> list | None:
        """Per-layer gate noise as tensors in the model's dtype (``None`` stays ``None``)."""
        ...

    @staticmethod
    def forward(model: ModelLike, x, noises=None) -> tuple[np.ndarray, list[np.ndarray]]:
        """NumPy logits and per-layer selected masks; ``noises`` = per-layer gate noise (training mode)."""
        ...

    @staticmethod
    def gradients(model: ModelLike, x, y, noises=None) -> tuple[float, dict[str, np.ndarray]]:
        """The training loss and its gradient with respect to every parameter (spec names)."""
        ...

    @staticmethod
    def evaluate_batch(model: ModelLike, x, y) -> tuple[float, float, list[np.ndarray]]:
        """Summed loss and correct predictions over the batch's targets, and per-layer selection counts
        (NumPy (E_l,)), computed on the device; the harness sums batches."""
        ...

    @staticmethod
    def to_float(value) -> float:
        """A loss ``Trainer.step`` returned as a Python float (the host sync)."""
        ...

    @staticmethod
    def runtime_info() -> dict:
        """Framework versions and the device, for the results' environment fingerprint."""
        ...
