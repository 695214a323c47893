"""The Transformer backbone of the spec (``spec.transformer``) against a per-query loop oracle, its
causality, its probe record, its accounting, and the config's run-key stability."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backends import reference
from backends.spec import ModelConfig, RouterConfig, ScheduleConfig, init_params, rng
from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.accounting import active_flops_per_token, parameter_count
from backends.spec.config import SEQUENCE_LENGTH, MoUEConfig, TrainConfig
from backends.spec.kinds import ffn_of, of
from backends.spec.ops import NumpyOps
from harness.experiments.run import RunConfig

OPS = NumpyOps()
CASES = {
    "dynamoe": ModelConfig(size="tiny", task="lm", vocab_size=61, backbone="transformer"),
    "mlp": ModelConfig(size="tiny", task="lm", vocab_size=61, kind="mlp", backbone="transformer"),
    "moue": ModelConfig(
        size="tiny",
        task="lm",
        vocab_size=61,
        kind="moue",
        backbone="transformer",
        moue=MoUEConfig(pool_size=10, local_experts=1, trajectory_dim=4),
    ),
    "ascending-top2": ModelConfig(
        size="tiny",
        task="lm",
        vocab_size=61,
        backbone="transformer",
        num_heads=2,
        schedule=ScheduleConfig("ascending"),
        router=RouterConfig(kind="topk"),
    ),
}


def ids(cfg, batch=3, steps=9, seed=0):
    return rng.sample_generator(seed).integers(0, cfg.vocab_size, size=(batch, steps))


def _normalise(h, eps):
    c = h - h.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps)


def oracle(params, x, cfg):
    """Logits by loops over sequences, heads and queries; the feed-forward is the kind's own block."""
    b, t = x.shape
    d, heads = cfg.hidden_dim, cfg.num_heads
    w = d // heads
    pe = np.array(
        [[np.sin(p / 10_000 ** (i / d)) if i % 2 == 0 else np.cos(p / 10_000 ** ((i - 1) / d)) for i in range(d)] for p in range(t)]
    )
    h = params["embed.weight"][x] * np.sqrt(d) + pe
    ffn = ffn_of(cfg)
    state = ffn.initial_state(OPS, h.reshape(b * t, d), cfg)
    for layer in range(cfg.num_layers):
        a = _normalise(h, cfg.layer_norm_eps)
        pre = f"layers.{layer}.attn."
        q, k, v = (a @ params[pre + n + ".weight"] + params[pre + n + ".bias"] for n in ("query", "key", "value"))
        mixed = np.zeros_like(h)
        for s in range(b):
            for g in range(heads):
                cols = slice(g * w, (g + 1) * w)
                for i in range(t):
                    scores = np.array([q[s, i, cols] @ k[s, j, cols] / np.sqrt(w) for j in range(i + 1)])
                    p = np.exp(scores - scores.max())
                    p /= p.sum()
                    mixed[s, i, cols] = sum(p[j] * v[s, j, cols] for j in range(i + 1))
        u = h + mixed @ params[pre + "out.weight"] + params[pre + "out.bias"]
        y, _, state = ffn.block(OPS, params, layer, _normalise(u, cfg.layer_norm_eps).reshape(b * t, d), state, cfg)
        h = u + y.reshape(b, t, d)
    out = _normalise(h, cfg.layer_norm_eps) * params["norm.gamma"] + params["norm.beta"]
    return out @ params["head.weight"] + params["head.bias"]


@pytest.mark.parametrize("case", CASES)
def test_forward_equals_the_loop_oracle(case):
    cfg = CASES[case]
    params = init_params(cfg, 3)
    x = ids(cfg)
    logits, routings = reference.forward(params, x, cfg)
    assert logits.shape == (3, 9, cfg.vocab_size)
    np.testing.assert_allclose(logits, oracle(params, x, cfg), rtol=0, atol=1e-11)
    assert len(routings) == (0 if cfg.kind == "mlp" else cfg.num_layers)
    assert all(r.mask.shape == (27, w) for r, w in zip(routings, of(cfg).layer_widths(cfg)))


@pytest.mark.parametrize("case", ["dynamoe", "moue"])
def test_causal_a_later_token_changes_no_earlier_logit(case):
    # top-2 routing per token: a batch-scope percentile would let a later token move the threshold
    cfg = CASES[case].replace(router=RouterConfig(kind="topk", top_k=2))
    params = init_params(cfg, 0)
    x = ids(cfg, batch=2, steps=8)
    changed = x.copy()
    changed[:, 5] = (changed[:, 5] + 1) % cfg.vocab_size
    a, _ = reference.forward(params, x, cfg)
    b, _ = reference.forward(params, changed, cfg)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-6


@pytest.mark.parametrize("case", CASES)
def test_the_probe_record(case):
    cfg = CASES[case]
    params = init_params(cfg, 1)
    x = ids(cfg)
    logits, routings, record = reference.forward_with_probes(params, x, cfg)
    np.testing.assert_array_equal(logits, reference.forward(params, x, cfg)[0])
    assert len(record["attention"]) == len(record["post_attention"]) == cfg.num_layers
    for a, u in zip(record["attention"], record["post_attention"]):
        assert a.shape == (3, cfg.num_heads, 9, 9) and u.shape == (27, cfg.hidden_dim)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)
        assert (np.triu(np.ones((9, 9)), 1)[None, None] * a == 0).all()  # masked weights exactly 0
        np.testing.assert_array_equal(a[:, :, 0, 0], 1.0)


def test_accounting_adds_exactly_the_attention():
    for case in ("dynamoe", "mlp", "moue"):
        cfg = CASES[case]
        flat = dataclasses.replace(cfg, backbone="mlp")
        d, layers = cfg.hidden_dim, cfg.num_layers
        assert parameter_count(cfg) == parameter_count(flat) + layers * (4 * d * d + 4 * d)
        attention = 8 * d * d + 4 * d * (SEQUENCE_LENGTH + 1) / 2
        assert active_flops_per_token(cfg) == pytest.approx(active_flops_per_token(flat) + layers * attention)
        assert of(cfg).layer_widths(cfg) == of(flat).layer_widths(flat)


def test_init_the_attention_maps_like_linear_layers():
    cfg = CASES["moue"]
    params = init_params(cfg, 0)
    bound = 1 / np.sqrt(cfg.hidden_dim)
    for name in ("layers.0.attn.query.weight", "layers.1.attn.out.bias"):
        assert 0.5 * bound < np.abs(params[name]).max() <= bound
    assert np.abs(params["pool.gate.weight"]).max() <= 1 / np.sqrt(cfg.hidden_dim + 4)  # MoUE's own rule kept
    names = list(params)
    assert names.index("layers.0.experts.w1") < names.index("layers.1.attn.query.weight") < names.index("pool.experts.w1")


def test_balance_loss_is_the_feed_forward_kinds():
    cfg = CASES["moue"].replace(router=RouterConfig(balance_weight=0.01))
    params = init_params(cfg, 0)
    x = ids(cfg)
    _, routings = reference.forward(params, x, cfg)
    assert of(cfg).balance_loss(OPS, routings, cfg) == ffn_of(cfg).balance_loss(OPS, routings, cfg)
    y = ids(cfg, seed=1)
    assert reference.loss(params, x, y, cfg) > reference.loss(params, x, y, cfg.replace(router=RouterConfig()))


def test_the_config_keys_of_the_mlp_backbone_are_unchanged():
    mlp = ModelConfig(size="tiny", task="lm", vocab_size=61)
    assert "backbone" not in mlp.as_dict() and "num_heads" not in mlp.as_dict()
    fields = dataclasses.asdict(mlp)
    del fields["backbone"], fields["num_heads"]
    assert mlp.as_dict() == fields
    run = RunConfig("torch", "wikitext2", 0, mlp, TrainConfig())
    assert run.as_dict()["model"] == fields
    cfg = CASES["moue"]
    assert cfg.as_dict()["backbone"] == "transformer" and cfg.as_dict()["num_heads"] == 4
    assert ModelConfig.from_dict(cfg.as_dict()) == cfg
    assert RunConfig.from_dict(RunConfig("torch", "wikitext2", 0, cfg, TrainConfig()).as_dict()).model == cfg
    assert (
        RunConfig("torch", "wikitext2", 0, cfg, TrainConfig()).key
        != RunConfig("torch", "wikitext2", 0, cfg.replace(num_heads=2), TrainConfig()).key
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": "rnn"}, "backbone"),
        ({"backbone": "transformer", "task": "classify"}, "needs task='lm'"),
        ({"backbone": "transformer", "task": "lm", "num_heads": 3}, "must divide the hidden width 64"),
        ({"task": "lm", "num_heads": 2}, "only for backbone='transformer'"),
        ({"backbone": "transformer", "task": "lm", "num_heads": 0}, "num_heads"),
    ],
)
def test_invalid_transformer_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(size="tiny", **changes)


def test_sinusoids_and_the_causal_mask():
    table = T.sinusoids(5, 6)
    np.testing.assert_array_equal(table[0], [0, 1, 0, 1, 0, 1])
    assert table[3, 2] == pytest.approx(np.sin(3 / 10_000 ** (2 / 6)))
    assert not table.flags.writeable
    np.testing.assert_array_equal(T.causal(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_masked_softmax_rows():
    x = np.array([[3.0, 1e3, -2.0], [0.5, 0.1, 7.0]])
    mask = np.array([[True, False, True], [True, True, True]])
    p = OPS.softmax(x, axis=-1, mask=mask)
    assert p[0, 1] == 0.0
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-15)
    np.testing.assert_allclose(p[0, [0, 2]], np.exp([3.0, -2.0]) / np.exp([3.0, -2.0]).sum())
    np.testing.assert_allclose(OPS.softmax(x[1:]), F.softmax(OPS, x[1:]), atol=1e-16)


def test_the_embedding_keeps_sequences_only_for_a_sequence_kind():
    cfg = CASES["dynamoe"]
    x = ids(cfg)
    params = init_params(cfg, 0)
    assert F.embed(OPS, params, x, cfg).shape == (3, 9, cfg.hidden_dim)
    flat = cfg.replace(backbone="mlp")
    assert F.embed(OPS, init_params(flat, 0), x, flat).shape == (27, cfg.hidden_dim)
