"""The model's forward math (Section 3.4, Eq. 1, 4-7), written once against ``spec.ops``.

The reference evaluates it with NumPy in float64; every backend evaluates it with its own primitives on
its own parameter containers. Parameter names and shapes are ``spec.init.param_shapes``.

Network: ``h_0 = x W_in + b_in`` (or a token embedding), ``h_l = h_{l-1} + F_l(h_{l-1})`` with F_l a
DynaMoE layer (or one feed-forward block for the MLP baseline; the layers are the kind's,
``spec.kinds``), ``LayerNorm(h_L)``, then a linear head. Weights are stored (in, out): ``y = x @ W + b``.
No per-layer normalisation (the paper names one LayerNorm, after the last layer).
"""

from __future__ import annotations

from . import dispatch
from .config import ModelConfig, RouterConfig
from .kinds import of
from .routers import Routing, route_logits, softmax  # noqa: F401  (Routing and softmax live in spec.routers)


def normalise(ops, h, eps: float):
    """LayerNorm without its affine parameters: ``(h - mean) / sqrt(var + eps)`` over the last axis."""
    mean = ops.mean(h, axis=-1, keepdims=True)
    centred = h - mean
    var = ops.mean(centred * centred, axis=-1, keepdims=True)
    return centred / ops.sqrt(var + eps)


def layer_norm(ops, h, gamma, beta, eps: float):
    return normalise(ops, h, eps) * gamma + beta


def feed_forward(ops, h, w1, b1, w2, b2):
    """Two-layer ReLU network ("affine-ReLU", Section 7.1.2): ``relu(h W1 + b1) W2 + b2``."""
    return ops.matmul(ops.relu(ops.matmul(h, w1) + b1), w2) + b2


def route(ops, h, gate_weight, noise, router: RouterConfig) -> Routing:
    """Gate (Eq. 1), noise (Eq. 7), selection and weights for tokens ``h`` (N, d) by ``router.kind``.

    ``noise`` (N, E) or ``None`` is added to the gate probabilities. DynaMoE (``kind="dynamic"``): the
    selection (Eq. 4-5) and the weights (Eq. 6) both use the noisy values (Algorithm 1 as reconstructed
    in ``../shared/spec/PAPERS.md`` section 2.4). The baselines: ``spec.routers``.
    """
    return route_logits(ops, ops.matmul(h, gate_weight), noise, router)


def dynamoe_layer(ops, p: dict, h, noise, router: RouterConfig):
    """One DynaMoE layer ``y = sum_{i in S} w_i E_i(h)`` (Eq. 6) on tokens ``h`` (N, d) -> (y, Routing).

    ``p``: ``gate`` (d, E), ``w1`` (E, d, d_h), ``b1`` (E, d_h), ``w2`` (E, d_h, d), ``b2`` (E, d).
    Every expert is evaluated on every token and weighted by w, which is exactly zero outside S: the
    dense-masked form, static in shape (a sparse dispatch is a backend's optimisation, same result).
    """
    routing = route(ops, h, p["gate"], noise, router)
    return expert_mixture(ops, p, h, routing.weights), routing


def expert_mixture(ops, p: dict, h, weights):
    """``sum_i w_i E_i(h)`` for tokens ``h`` (N, d) and combine weights ``weights`` (N, E), zero off S.

    The methods (dense-masked: every expert on every token, as one batched product or as one wide
    network; or a sparse dispatch) give the same sum; the backend's measured choice: ``spec.dispatch``.
    """
    return dispatch.mixture(ops, p, h, weights)


def layer_params(params: dict, cfg: ModelConfig, layer: int) -> dict:
    """The parameters of layer ``layer`` under the short names ``dynamoe_layer``/``feed_forward`` use."""
    prefix = f"layers.{layer}."
    if cfg.kind == "dynamoe":
        return {"gate": params[prefix + "gate.weight"], **{k: params[prefix + "experts." + k] for k in ("w1", "b1", "w2", "b2")}}
    return {k: params[prefix + "ffn." + k] for k in ("w1", "b1", "w2", "b2")}


def embed(ops, params: dict, x, cfg: ModelConfig):
    """Input projection (images, (B, input_dim) -> (B, d)) or token embedding (ids (B, T) -> (B*T, d);
    (B, T, d) for a kind whose layers read sequences, ``Kind.sequence``)."""
    if cfg.task == "lm":
        batch, steps = ops.shape(x)
        shape = (batch, steps, cfg.hidden_dim) if of(cfg).sequence else (batch * steps, cfg.hidden_dim)
        return ops.reshape(ops.take_rows(params["embed.weight"], ops.reshape(x, (batch * steps,))), shape)
    return ops.matmul(x, params["input.weight"]) + params["input.bias"]


def model_hidden(ops, params: dict, x, cfg: ModelConfig, noises=None):
    """The normalised final states ``LayerNorm(h_L)`` (N, d) the head reads, and the per-layer routings.

    ``x``: (B, input_dim) floats or (B, T) token ids (N = B*T tokens in ``lm``); ``noises``: per-layer
    gate noise (training) or ``None``, shapes ``spec.kinds.layer_widths``. The residual layers are
    ``cfg.kind``'s (``spec.kinds``). The language model's loss reads these states chunk by chunk
    (``linear_cross_entropy``) instead of a tokens x vocabulary logits tensor.
    """
    h, routings = of(cfg).layers(ops, params, embed(ops, params, x, cfg), cfg, noises)
    return layer_norm(ops, h, params["norm.gamma"], params["norm.beta"], cfg.layer_norm_eps), routings


def head_logits(ops, h, weight, bias):
    """The linear head ``h W + b``."""
    return ops.affine(h, weight, bias)


def model_forward(ops, params: dict, x, cfg: ModelConfig, noises=None):
    """Logits and per-layer routings of the whole network (``model_hidden`` then the head).

    Returns ``(logits, routings)``: logits (B, C) or (B, T, V); routings a list of ``Routing``
    (empty for the MLP). In ``lm`` every position is a token of the layer's routing batch.
    """
    h, routings = model_hidden(ops, params, x, cfg, noises)
    logits = head_logits(ops, h, params["head.weight"], params["head.bias"])
    if cfg.task == "lm":
        batch, steps = ops.shape(x)
        logits = ops.reshape(logits, (batch, steps, cfg.output_dim))
    return logits, routings


def cross_entropy(ops, logits, labels):
    """Mean cross-entropy of integer ``labels`` under ``logits`` (perplexity = exp of it).

    ``logsumexp(z) - z_label`` is ``-log_softmax(z)_label`` without a vocabulary-wide log-probability
    tensor: a language-model batch's logits are 4,096 x 50,257 floats (823 MB in float32), and every
    extra tensor of that size (and its gradient) costs time and memory.
    """
    return ops.mean(ops.logsumexp(logits, axis=-1) - ops.one_hot_pick(logits, labels))


def correct_count(ops, logits, labels):
    """Number of top-1 predictions equal to ``labels`` (as a float array)."""
    best = ops.max(logits, axis=-1, keepdims=True)
    picked = ops.one_hot_pick(logits, labels)
    return ops.sum(ops.to_float(picked >= best[..., 0], logits))


# --- the head and its cross-entropy chunk by chunk over tokens ---------------------------------------------
#
# A language-model batch's logits are 4,096 x 50,257 floats (823 MB in float32, as much again for their
# gradient); materialising them costs more than the head's arithmetic. The loss and its gradient are
# computed a chunk of tokens at a time (the fused linear cross-entropy of Liger-Kernel): each chunk's
# logits, their logsumexp, and at once the gradients of the chunk's states and of the head's weight and
# bias, so no tokens x vocabulary tensor and no stored logits. The sums are the same as over the full
# logits; only the order of the additions over tokens differs.

# Logits per chunk (128 MB in float32: 7 chunks of a Tiny batch's 4,096 tokens at 50,257): measured on the
# 2-core CPU machine (torch, head alone, interleaved), chunks of 2^21 .. 2^25 logits took 3.3x .. 1.0x
# the time of the three full-size products; below that, reading W and accumulating dW per chunk dominate.
HEAD_CHUNK_ELEMENTS = 2**25


def head_chunks(tokens: int, vocab: int, elements: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``tokens`` rows in equal chunks (the last may be shorter) of at most
    ``elements`` logits each (at least one row)."""
    count = max(1, -(-tokens * max(vocab, 1) // (elements or HEAD_CHUNK_ELEMENTS)))
    size = max(1, -(-tokens // count))
    return [(start, min(tokens, start + size)) for start in range(0, tokens, size)]


def _chunk_elements(ops) -> int:
    """The logits per chunk: ``HEAD_CHUNK_ELEMENTS``, or the backend's smaller ``ops.head_chunk_elements``."""
    return min(HEAD_CHUNK_ELEMENTS, ops.head_chunk_elements or HEAD_CHUNK_ELEMENTS)


def head_chunk_sums(ops, h, weight, bias, labels):
    """One chunk's ``(summed cross-entropy, top-1 hits)``: ``ops.cross_entropy_sums`` of its logits."""
    return ops.cross_entropy_sums(head_logits(ops, h, weight, bias), labels)


def head_chunk_grads(ops, h, weight, bias, labels, scale: float):
    """One chunk's summed cross-entropy and its parts of the gradients: ``dz = scale (softmax(z) - onehot)``
    (``ops.cross_entropy_grad``), then ``(loss, dz W^T, h^T dz, sum dz)``."""
    part, dz = ops.cross_entropy_grad(head_logits(ops, h, weight, bias), labels, scale)
    return part, ops.matmul(dz, ops.transpose(weight, (1, 0))), ops.matmul(ops.transpose(h, (1, 0)), dz), ops.sum_rows(dz)


def head_sums(ops, h, weight, bias, labels):
    """``(sum of the cross-entropy, number of correct top-1 predictions)`` over the tokens ``h`` (N, d)
    with integer ``labels`` (N,), chunk by chunk (``head_chunk_sums``: ``cross_entropy`` and
    ``correct_count`` of each chunk's logits), in order."""
    chunks = head_chunks(ops.shape(h)[0], ops.shape(weight)[-1], _chunk_elements(ops))
    if ops.head_blocks is not None:
        return ops.head_blocks.sums(h, weight, bias, labels, chunks)
    loss = correct = None
    for start, stop in chunks:
        part_loss, part_correct = head_chunk_sums(ops, ops.rows(h, start, stop), weight, bias, ops.rows(labels, start, stop))
        loss = part_loss if loss is None else loss + part_loss
        correct = part_correct if correct is None else correct + part_correct
    return loss, correct


def head_loss_and_grads(ops, h, weight, bias, labels, scale: float):
    """``scale`` x the summed cross-entropy of the head on ``h`` (N, d) and its gradients
    ``(loss, (d loss/d h, d loss/d weight, d loss/d bias))``: ``head_chunk_grads`` per chunk, in order,
    the weight's and bias's parts summed."""
    chunks = head_chunks(ops.shape(h)[0], ops.shape(weight)[-1], _chunk_elements(ops))
    if ops.head_blocks is not None:
        return ops.head_blocks.loss_and_grads(h, weight, bias, labels, scale, chunks)
    loss = dweight = dbias = None
    dh = []
    for start, stop in chunks:
        hc, y = ops.rows(h, start, stop), ops.rows(labels, start, stop)
        part, dh_part, dweight_part, dbias_part = head_chunk_grads(ops, hc, weight, bias, y, scale)
        dh.append(dh_part)
        loss = part if loss is None else loss + part
        dweight = dweight_part if dweight is None else dweight + dweight_part
        dbias = dbias_part if dbias is None else dbias + dbias_part
    return loss * scale, (ops.concat(dh, axis=0) if len(dh) > 1 else dh[0], dweight, dbias)


def linear_cross_entropy(ops, h, weight, bias, labels):
    """Mean cross-entropy of the head ``h W + b`` at integer ``labels`` (N,), equal to
    ``cross_entropy(ops, head_logits(...), labels)``, with its gradient (w.r.t. ``h``, ``weight``, ``bias``)
    from ``head_loss_and_grads`` attached by ``ops.with_gradient`` (no tokens x vocabulary tensor)."""
    scale = 1.0 / ops.shape(labels)[0]

    def loss_and_grads(h, weight, bias, labels):
        return head_loss_and_grads(ops, h, weight, bias, labels, scale)

    def value(h, weight, bias, labels):
        return head_sums(ops, h, weight, bias, labels)[0] * scale

    return ops.with_gradient(loss_and_grads, (h, weight, bias), (labels,), value)
