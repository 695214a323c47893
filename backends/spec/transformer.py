"""The Transformer backbone (``ModelConfig.backbone = "transformer"``), registered in ``spec.kinds`` on
import: a small causal pre-LayerNorm language model whose feed-forward is the layer of ``cfg.kind``
(a DynaMoE layer under any router and schedule, a MoUE pool, or the dense MLP block), so the paper's
Section 7.6 question (does the best schedule move from descending towards ascending or pyramid once
attention mixes the tokens?) and its Section 5.4 probes (``spec.probes``) can be measured.

Layer l (Eq. 27-28 of the paper, with the usual pre-LN placement)::

    u_l = h_{l-1} + MHSA_l(LN(h_{l-1}))        the post-attention representation (what the probes read)
    h_l = u_l + F_l(LN(u_l))                   F_l: cfg.kind's layer (``Kind.block``), routed over all B*T tokens

then the core's final LayerNorm (with gamma, beta) and head. Decisions:

- **Positions: sinusoidal** (Vaswani et al. 2017), added to the token embedding scaled by ``sqrt(d)``.
  Not learned, because (1) they add no parameters, so the Transformer's parameters over the MLP
  backbone's are exactly the attention's and the schedules' counts differ only by their experts; (2) they
  are defined for every length, so the model needs no context-length field and the parity tests can use
  short sequences; (3) the table is a NumPy constant every backend receives rounded from the same float64
  array; (4) a learned table would be one more initialisation the paper does not give. The ``sqrt(d)``
  scale keeps the token embedding (std 0.02, GPT-2's) from being swamped by the unit-size sinusoids.
- **Attention**: ``num_heads`` heads of width ``d / heads``, separate query, key, value and output maps
  with biases (``(in, out)`` weights, PyTorch's ``nn.Linear`` initialisation like every other linear
  map), scores scaled by ``1 / sqrt(d / heads)``, the causal mask through ``ops.softmax``'s mask (masked
  weights exactly 0).
- **Block LayerNorms have no affine parameters** (``forward.normalise``): each feeds linear maps that
  absorb ``gamma`` and ``beta`` (``diag(gamma) W`` and ``beta W + b``; only the bias-free gate loses the
  constant logit offset ``beta W_g``), and it keeps the core's initialisation rules unchanged.
- **Routing**: every position is a token of the layer's routing batch (N = B*T), as in the MLP
  backbone's language model, so noise, masks and statistics have the same shapes.
- **Causality of the percentile**: under the paper's ``scope="batch"`` the threshold (Eq. 4) is one
  percentile of the gate values of all B*T tokens, later positions included, so a token's expert count
  depends on tokens it may not attend to, like a batch statistic in training. What leaks is one scalar
  per layer and batch, drawn from 4,096 tokens; no token's own prediction can read a later token's value
  through it beyond moving that scalar. It stays the default so the schedules are the paper's rule on
  both backbones; ``RouterConfig(scope="token")`` (the per-token reading, causal by construction) runs
  the same experiment without it. Evaluation uses fixed batches of held-out windows, so a reported
  perplexity does not depend on what else was evaluated.
- **MoUE**: the trajectory state runs along the layers as in ``spec.moue``, updated after each layer's
  feed-forward; its router reads ``[LN(u_l) ; r_l]``.
- **FLOPs** (``layer_flops``): the feed-forward's plus the four ``d x d`` maps (``8 d^2``) and the scores
  and the weighted sum over a query's causal keys, ``4 d (T + 1) / 2`` averaged over positions, at the
  harness's context ``config.SEQUENCE_LENGTH``.

``transformer_block`` is one layer (Eq. 27-28) with any feed-forward: ``transformer_layers`` calls it
with ``cfg.kind``'s block, and each backend's native ``TransformerBlock`` with its native feed-forward.
``forward_with_probes`` is ``forward.model_forward`` that also returns each layer's attention weights
(B, heads, T, T) and post-attention representations ``u_l`` (B*T, d), the inputs of ``spec.probes``.
"""

from __future__ import annotations

from functools import lru_cache, partial

import numpy as np

from .config import SEQUENCE_LENGTH, ModelConfig
from .forward import embed, layer_norm, normalise
from .kinds import Kind, ffn_of, register

ATTENTION_MAPS = ("query", "key", "value", "out")


@lru_cache(maxsize=16)
def sinusoids(steps: int, d: int) -> np.ndarray:
    """The (T, d) float64 table ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(...)``."""
    position = np.arange(steps, dtype=np.float64)[:, None]
    rate = np.exp(-np.log(10_000.0) * (np.arange(0, d, 2, dtype=np.float64) / d))
    table = np.zeros((steps, d))
    table[:, 0::2] = np.sin(position * rate)
    table[:, 1::2] = np.cos(position * rate[: d // 2])
    table.setflags(write=False)
    return table


@lru_cache(maxsize=16)
def causal(steps: int) -> np.ndarray:
    """The (T, T) 0/1 float mask of keys ``j <= i`` each query ``i`` may attend to."""
    mask = np.tril(np.ones((steps, steps)))
    mask.setflags(write=False)
    return mask


def causal_mask(ops, steps: int, like):
    """``causal(steps)`` as a boolean array of ``ops`` (on ``like``'s device): the ``allowed`` of ``attention``."""
    return ops.constant(np.array(causal(steps)), like=like) > 0.5  # a copy: frameworks refuse read-only buffers


def attention_params(params: dict, layer: int) -> dict:
    """Layer ``layer``'s attention maps under short names (``query.weight``, ..., ``out.bias``)."""
    prefix = f"layers.{layer}.attn."
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def attention(ops, p: dict, x, heads: int, allowed):
    """Multi-head causal self-attention on ``x`` (B, T, d): ``(output (B, T, d), weights (B, heads, T, T))``."""
    batch, steps, d = ops.shape(x)
    width = d // heads

    def split(name):  # (B, T, d) -> (B, heads, T, width)
        t = ops.matmul(x, p[name + ".weight"]) + p[name + ".bias"]
        return ops.transpose(ops.reshape(t, (batch, steps, heads, width)), (0, 2, 1, 3))

    q, k, v = split("query"), split("key"), split("value")
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / float(np.sqrt(width)))
    weights = ops.softmax(scores, axis=-1, mask=allowed)
    mixed = ops.reshape(ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3)), (batch, steps, d))
    return ops.matmul(mixed, p["out.weight"]) + p["out.bias"], weights


def transformer_block(ops, attn: dict, h, heads: int, allowed, eps: float, feed_forward):
    """One pre-LN block (Eq. 27-28) on sequences ``h`` (B, T, d)::

        u  = h + MHSA(LN(h))        (B*T, d) after the attention: what the probes read
        h' = u + F(LN(u))

    ``attn``: the attention maps under short names (``attention_params``); ``allowed``: the (T, T) boolean
    mask of the keys each query may attend to (``causal_mask``); LN has no affine parameters
    (``forward.normalise``). ``feed_forward(x)`` maps the tokens ``LN(u)`` (B*T, d) to a tuple ``(F(x),
    *extra)``. Returns ``(h' (B, T, d), weights (B, heads, T, T), u, extra)``. Positions are the caller's.
    """
    batch, steps, d = ops.shape(h)
    mixed, weights = attention(ops, attn, normalise(ops, h, eps), heads, allowed)
    u = ops.reshape(h + mixed, (batch * steps, d))
    y, *extra = feed_forward(normalise(ops, u, eps))
    return ops.reshape(u + y, (batch, steps, d)), weights, u, tuple(extra)


def transformer_layers(ops, params: dict, h, cfg: ModelConfig, noises=None, record: dict | None = None):
    """The L blocks (``transformer_block``) on embedded sequences ``h`` (B, T, d), after the scaled
    embedding and the positions: ``(h_L (B*T, d), routings)``.

    ``record`` (a dict, optional) receives ``"attention"``: each layer's weights (B, heads, T, T), and
    ``"post_attention"``: each layer's ``u_l`` (B*T, d).
    """
    batch, steps, d = ops.shape(h)
    tokens = batch * steps
    ffn = ffn_of(cfg)
    allowed = causal_mask(ops, steps, h)
    h = h * float(np.sqrt(d)) + ops.constant(np.array(sinusoids(steps, d)), like=h)
    state = ffn.initial_state(ops, ops.reshape(h, (tokens, d)), cfg)
    routings = []
    eps = cfg.layer_norm_eps
    for layer in range(cfg.num_layers):
        noise = None if noises is None else noises[layer]
        block = partial(ffn.block, ops, params, layer, state=state, cfg=cfg, noise=noise)  # (y, routing, state)
        h, weights, u, (routing, state) = transformer_block(ops, attention_params(params, layer), h, cfg.num_heads, allowed, eps, block)
        if routing is not None:
            routings.append(routing)
        if record is not None:
            record.setdefault("attention", []).append(weights)
            record.setdefault("post_attention", []).append(u)
    return ops.reshape(h, (tokens, d)), routings


def forward_with_probes(ops, params: dict, x, cfg: ModelConfig):
    """Evaluation-mode ``(logits (B, T, V), routings, record)`` with ``record`` as in ``transformer_layers``
    (the same arithmetic as ``forward.model_forward``)."""
    record: dict = {}
    h, routings = transformer_layers(ops, params, embed(ops, params, x, cfg), cfg, None, record)
    h = layer_norm(ops, h, params["norm.gamma"], params["norm.beta"], cfg.layer_norm_eps)
    batch, steps = ops.shape(x)
    logits = ops.reshape(ops.matmul(h, params["head.weight"]) + params["head.bias"], (batch, steps, cfg.output_dim))
    return logits, routings, record


def attention_flops(cfg: ModelConfig, steps: int = SEQUENCE_LENGTH) -> float:
    """Per-token FLOPs of one attention layer: ``8 d^2`` for the maps, ``4 d (T + 1) / 2`` for scores and sum."""
    d = cfg.hidden_dim
    return 8.0 * d * d + 4.0 * d * (steps + 1) / 2.0


class Transformer(Kind):
    sequence = True

    def layer_shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        # layer by layer (attention, then the feed-forward's own), then what no layer owns (a MoUE pool):
        # the order of a module tree built from the names, so every backend exports them in this order
        d, ffn = cfg.hidden_dim, ffn_of(cfg).layer_shapes(cfg)
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(cfg.num_layers):
            prefix = f"layers.{layer}."
            for name in ATTENTION_MAPS:
                shapes[f"{prefix}attn.{name}.weight"] = (d, d)
                shapes[f"{prefix}attn.{name}.bias"] = (d,)
            shapes.update({name: shape for name, shape in ffn.items() if name.startswith(prefix)})
        shapes.update({name: shape for name, shape in ffn.items() if name not in shapes})
        return shapes

    def layers(self, ops, params: dict, h, cfg: ModelConfig, noises=None, record: dict | None = None):
        return transformer_layers(ops, params, h, cfg, noises, record)

    def layer_widths(self, cfg: ModelConfig) -> list[int]:
        return ffn_of(cfg).layer_widths(cfg)

    def layer_flops(self, cfg: ModelConfig, layer: int, active: float | None) -> float:
        return ffn_of(cfg).layer_flops(cfg, layer, active) + attention_flops(cfg)

    def fan_in(self, name: str, shape: tuple[int, ...], cfg: ModelConfig) -> int | None:
        return ffn_of(cfg).fan_in(name, shape, cfg)

    def balance_loss(self, ops, routings: list, cfg: ModelConfig):
        return ffn_of(cfg).balance_loss(ops, routings, cfg)


register("transformer", Transformer())
