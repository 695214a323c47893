"""Parameter names, shapes and seeded initialisation (all backends load these arrays).

Distribution per tensor (the paper gives none; these are PyTorch's ``nn.Linear`` defaults, so a
PyTorch user sees familiar starting points):

- every linear weight and bias (input projection, gate, expert and MLP layers, head):
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with fan_in the layer's input width;
- the gate has no bias (Eq. 1: ``softmax(W_g h)``); MoUE's gates read ``[h ; r]`` (fan_in d + r) and its
  trajectory embeddings (rows of r) use fan_in r;
- the token embedding (``lm``): ``N(0, 0.02^2)`` (GPT-2's);
- LayerNorm: gamma = 1, beta = 0.

Each tensor is drawn from its own stream ``rng.generator(seed, rng.PARAMS, crc32(name))`` in float64,
so any backend fed these arrays starts from the same model.
"""

from __future__ import annotations

import numpy as np

from . import rng
from .config import ModelConfig
from .kinds import of

EMBED_STD = 0.02


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (the order of export and of optimiser state):
    the input projection or embedding, the kind's residual layers (``spec.kinds``), LayerNorm, head."""
    d = cfg.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.task == "lm":
        shapes["embed.weight"] = (cfg.vocab_size, d)
    else:
        shapes["input.weight"] = (cfg.input_dim, d)
        shapes["input.bias"] = (d,)
    shapes.update(of(cfg).layer_shapes(cfg))
    shapes["norm.gamma"] = (d,)
    shapes["norm.beta"] = (d,)
    shapes["head.weight"] = (d, cfg.output_dim)
    shapes["head.bias"] = (cfg.output_dim,)
    return shapes


def check_params(cfg: ModelConfig, names_shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise ``ValueError`` unless ``names_shapes`` are exactly ``param_shapes(cfg)`` (names and shapes)."""
    expected = param_shapes(cfg)
    if set(names_shapes) != set(expected):
        raise ValueError(
            f"parameters do not match the config: missing {sorted(set(expected) - set(names_shapes))}, "
            f"unexpected {sorted(set(names_shapes) - set(expected))}"
        )
    for name, shape in expected.items():
        if tuple(names_shapes[name]) != shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(names_shapes[name])}, the config needs {shape}")


def fan_in(name: str, shape: tuple[int, ...], cfg: ModelConfig) -> int:
    """Input width of the linear map a weight or bias belongs to (the kind's own rule first)."""
    own = of(cfg).fan_in(name, shape, cfg)
    if own is not None:
        return own
    if name.startswith("input."):
        return cfg.input_dim
    if name.endswith(("experts.w2", "experts.b2")):
        return cfg.expert_hidden
    if name.endswith(("ffn.w2", "ffn.b2")):
        return cfg.mlp_hidden
    return cfg.hidden_dim


INIT_RULES = ("ones", "zeros", "normal", "uniform")


def init_rule(name: str, shape: tuple[int, ...], cfg) -> tuple[str, float]:
    """The distribution of one parameter (module docstring): ``("ones" | "zeros", 0)``, ``("normal", std)``
    or ``("uniform", bound)`` for ``U(-bound, bound)``. ``init_tensor`` draws it from the spec's stream; a
    framework's own layers draw it from their framework's generator. ``cfg``: a ``ModelConfig``, or any
    object with the fields ``fan_in`` reads (a framework's stack of layers at its own width)."""
    if name == "norm.gamma":
        return "ones", 0.0
    if name == "norm.beta":
        return "zeros", 0.0
    if name == "embed.weight":
        return "normal", EMBED_STD
    return "uniform", float(1.0 / np.sqrt(fan_in(name, shape, cfg)))


def init_tensor(name: str, shape: tuple[int, ...], cfg: ModelConfig, seed: int) -> np.ndarray:
    """One parameter tensor, float64, from its own stream (see the module docstring)."""
    rule, scale = init_rule(name, shape, cfg)
    if rule == "ones":
        return np.ones(shape)
    if rule == "zeros":
        return np.zeros(shape)
    gen = rng.generator(seed, rng.PARAMS, rng.name_key(name))
    if rule == "normal":
        return scale * gen.standard_normal(shape)
    return gen.uniform(-scale, scale, size=shape)


def init_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """All parameters of ``cfg`` for ``seed`` as float64 NumPy arrays, in ``param_shapes`` order."""
    return {name: init_tensor(name, shape, cfg, seed) for name, shape in param_shapes(cfg).items()}
