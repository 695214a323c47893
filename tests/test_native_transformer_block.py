"""The native ``TransformerBlock`` of every framework (``backends.torch``, ``backends.keras``, ``backends.mlx``)
against the spec's block (``spec.transformer.transformer_block``) evaluated by float64 NumPy: outputs,
attention weights, post-attention states and masks given the same arrays and noise, for a DynaMoE and a
FeedForward feed-forward; blocks in sequence are the spec model's layers; causality, attention rows,
parameter names, construction errors, training-mode noise, the balancing loss, and one framework idiom
each (PyTorch's gradients and ``state_dict``, Keras's ``fit`` and ``.keras`` files, MLX's ``value_and_grad``).

Run per backend marker (Keras picks its backend once per process)::

    python -m pytest -m torch tests/test_native_transformer_block.py
    KERAS_BACKEND=jax python -m pytest -m keras_jax tests/test_native_transformer_block.py
    KERAS_BACKEND=torch python -m pytest -m keras_torch tests/test_native_transformer_block.py
    python -m pytest -m mlx tests/test_native_transformer_block.py

Tolerance: float64 outputs within 1e-12 of the reference (absolute, on values of order 1), the bound of the
other native-layer tests: the block is the same operations in the same order as the reference (``Ops`` of
the same spec function), so what differs is the frameworks' matmul and reduction kernels summing in their
own order, a few ulps (2.2e-16 each) per product of width d = 64; measured errors are about 1e-15. Masks
are compared exactly (the noise is given, so no selection sits on the threshold by chance).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from backends import common
from backends.spec import ModelConfig, RouterConfig, init_params, probes, rng
from backends.spec import forward as F
from backends.spec import transformer as T
from backends.spec.config import MoUEConfig
from backends.spec.init import param_shapes
from backends.spec.losses import aux_loss
from backends.spec.ops import NumpyOps
from tests.conftest import backend_or_skip

NP = NumpyOps()
F64_TOL = 1e-12
BATCH, STEPS = 3, 7
LM = dict(size="tiny", task="lm", vocab_size=61, backbone="transformer")
CASES = {"dynamoe": ModelConfig(**LM, router=RouterConfig(k_min=2, balance_weight=0.01)), "mlp": ModelConfig(**LM, kind="mlp", num_heads=2)}


class Torch:
    name = "torch"

    def __init__(self):
        self.bk = backend_or_skip("torch")
        import torch

        self.torch = torch

    def tensor(self, a, dtype="float64"):
        return self.torch.as_tensor(np.asarray(a, dtype=dtype))

    def numpy(self, t) -> np.ndarray:
        return t.detach().cpu().numpy()

    def seed(self, seed: int) -> None:
        self.torch.manual_seed(seed)

    def call(self, block, h, noise=None, training=False):
        block.train(training)
        return block.forward_with_routing(h, noise)

    def spec_names(self, block) -> list[str]:
        return list(block.spec_parameters())

    def framework_names(self, block) -> list[str]:
        return list(block.state_dict())

    def expected_framework_names(self, spec: list[str]) -> list[str]:
        """The attention's spec names, then the feed-forward's under its attribute."""
        return [name if name.startswith("attn.") else f"feed_forward.{name}" for name in spec]

    def values(self, block) -> dict[str, np.ndarray]:
        return {k: self.numpy(v) for k, v in block.spec_parameters().items()}

    def aux_losses(self, block) -> list[float]:
        return [float(block.aux_loss.detach())]


class Keras(Torch):
    def __init__(self, name: str):
        self.name = name
        self.bk = backend_or_skip(name)
        import keras

        self.keras = keras

    def tensor(self, a, dtype="float64"):
        return self.keras.ops.convert_to_tensor(np.asarray(a, dtype=dtype), dtype=dtype)

    def numpy(self, t) -> np.ndarray:
        t = t.value if isinstance(t, self.keras.Variable) else t
        return np.asarray(self.keras.ops.convert_to_numpy(t))

    def seed(self, seed: int) -> None:
        self.keras.utils.set_random_seed(seed)

    def call(self, block, h, noise=None, training=False):
        """Through ``__call__`` (which clears the last call's ``add_loss``), the routing from ``last_routing``."""
        return block(h, noise=noise, training=training), block.last_routing

    def spec_names(self, block) -> list[str]:
        return list(block.spec_variables())

    def framework_names(self, block) -> list[str]:
        return [v.name for v in block.trainable_weights]

    def expected_framework_names(self, spec: list[str]) -> list[str]:
        """Keras's weight names: the spec's with ``_`` for ``.`` (each under its own layer's path)."""
        return [name.replace(".", "_") for name in spec]

    def values(self, block) -> dict[str, np.ndarray]:
        return {k: self.numpy(v) for k, v in block.spec_variables().items()}

    def aux_losses(self, block) -> list[float]:
        return [float(self.numpy(loss)) for loss in block.losses]  # the DynaMoE's add_loss


class Mlx(Torch):
    name = "mlx"

    def __init__(self):
        self.bk = backend_or_skip("mlx")
        import mlx.core as mx
        from mlx.utils import tree_flatten

        self.mx, self.tree_flatten = mx, tree_flatten

    def tensor(self, a, dtype="float64"):
        return self.mx.array(np.asarray(a, dtype=dtype), dtype=getattr(self.mx, dtype))

    def numpy(self, t) -> np.ndarray:
        return np.array(t)

    def seed(self, seed: int) -> None:
        self.mx.random.seed(seed)

    def framework_names(self, block) -> list[str]:
        return [k for k, _ in self.tree_flatten(block.parameters())]

    def aux_losses(self, block) -> list[float]:
        return [float(block.aux_loss.item())]


KERAS_MARKS = {"keras-jax": pytest.mark.keras_jax, "keras-torch": pytest.mark.keras_torch}
FRAMEWORKS = [
    pytest.param(Torch, marks=pytest.mark.torch, id="torch"),
    *(pytest.param(partial(Keras, name), marks=mark, id=name) for name, mark in KERAS_MARKS.items()),
    pytest.param(Mlx, marks=pytest.mark.mlx, id="mlx"),
]


@pytest.fixture(params=FRAMEWORKS)
def fw(request):
    return request.param()


def inputs(cfg, seed=0):
    """Sequences (B, T, d) and layer 0's gate noise (B*T, E_0) (``None`` for the MLP)."""
    h = rng.sample_generator(seed).standard_normal((BATCH, STEPS, cfg.hidden_dim))
    if cfg.kind == "mlp":
        return h, None
    return h, rng.gate_noise(seed, 0, 0, (BATCH * STEPS, cfg.experts_per_layer()[0]), cfg.router.noise_std)


def reference(cfg, params, h, noise, layer=0):
    """The float64 NumPy block: ``(h', weights, u, routing or None)`` of ``spec.transformer.transformer_block``."""
    p = F.layer_params(params, cfg, layer)

    def ffn(x):  # (F(x), routing or None), as the native blocks call their feed-forward
        if cfg.kind == "mlp":
            return F.feed_forward(NP, x, p["w1"], p["b1"], p["w2"], p["b2"]), None
        return F.dynamoe_layer(NP, p, x, noise, cfg.router)

    attn, allowed = T.attention_params(params, layer), T.causal_mask(NP, h.shape[1], h)
    out, weights, u, (routing,) = T.transformer_block(NP, attn, h, cfg.num_heads, allowed, cfg.layer_norm_eps, ffn)
    return out, weights, u, routing


def block_of(fw, cfg, params, layer=0, dtype="float64"):
    return fw.bk.TransformerBlock.from_arrays(cfg, common.under(params, f"layers.{layer}."), dtype=dtype)


def max_error(got, want) -> float:
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_given_arrays_and_noise_are_the_spec(fw, kind):
    cfg = CASES[kind]
    params = init_params(cfg, 0)
    h, noise = inputs(cfg)
    block = block_of(fw, cfg, params)
    out, routing = fw.call(block, fw.tensor(h), None if noise is None else fw.tensor(noise), training=True)
    want, weights, u, ref = reference(cfg, params, h, noise)
    assert tuple(out.shape) == (BATCH, STEPS, cfg.hidden_dim)
    errors = {
        "out": max_error(fw.numpy(out), want),
        "attention": max_error(fw.numpy(block.last_attention), weights),
        "post_attention": max_error(fw.numpy(block.last_post_attention), u),
    }
    print(fw.name, kind, {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= F64_TOL, errors
    assert fw.numpy(block.last_attention).shape == (BATCH, cfg.num_heads, STEPS, STEPS)
    if ref is None:
        assert routing is None and block.last_routing is None
        return
    assert np.array_equal(fw.numpy(routing.mask), ref.mask) and np.array_equal(fw.numpy(block.last_routing.mask), ref.mask)
    assert np.array_equal(fw.numpy(block.feed_forward.last_counts), ref.mask.sum(0))
    want_aux = cfg.router.balance_weight * float(aux_loss(NP, [ref], cfg))
    assert fw.aux_losses(block) == [pytest.approx(want_aux, rel=1e-12)] and want_aux > 0


def test_blocks_in_sequence_are_the_spec_models_layers(fw):
    """The caller's positions (``sqrt(d)`` x the embedding + ``sinusoids``) and L blocks from ``layers.<i>.``
    are ``spec.transformer.transformer_layers``: states, masks and the probes' record per layer."""
    cfg = CASES["dynamoe"]
    params = init_params(cfg, 1)
    x = rng.sample_generator(2).integers(0, cfg.vocab_size, (BATCH, STEPS))
    noises = [rng.gate_noise(1, 0, i, (BATCH * STEPS, e), cfg.router.noise_std) for i, e in enumerate(cfg.experts_per_layer())]
    embedded = F.embed(NP, params, x, cfg)
    record: dict = {}
    want, routings = T.transformer_layers(NP, params, embedded, cfg, noises, record)
    h = fw.tensor(embedded * np.sqrt(cfg.hidden_dim) + T.sinusoids(STEPS, cfg.hidden_dim))
    for i in range(cfg.num_layers):
        block = block_of(fw, cfg, params, i)
        h, routing = fw.call(block, h, fw.tensor(noises[i]), training=True)
        assert np.array_equal(fw.numpy(routing.mask), routings[i].mask), i
        assert max_error(fw.numpy(block.last_attention), record["attention"][i]) <= F64_TOL
        assert max_error(fw.numpy(block.last_post_attention), record["post_attention"][i]) <= F64_TOL
    assert max_error(fw.numpy(h).reshape(-1, cfg.hidden_dim), want) <= F64_TOL


def test_a_perturbed_array_changes_the_output(fw):
    """The comparison above can fail: one attention weight moved by 1e-3 moves the output far past it."""
    cfg = CASES["dynamoe"]
    params = init_params(cfg, 0)
    h, noise = inputs(cfg)
    want = reference(cfg, params, h, noise)[0]
    arrays = common.under(params, "layers.0.")
    arrays["attn.value.weight"] = arrays["attn.value.weight"].copy()
    arrays["attn.value.weight"][3, 5] += 1e-3
    block = fw.bk.TransformerBlock.from_arrays(cfg, arrays, dtype="float64")
    out, _ = fw.call(block, fw.tensor(h), fw.tensor(noise), training=True)
    assert max_error(fw.numpy(out), want) > 1e3 * F64_TOL


@pytest.mark.parametrize("kind", ["dynamoe", "mlp"])
def test_causal_attention_rows_and_outputs(fw, kind):
    """With token-scope routing (the batch scope's percentile is non-causal by design, see
    ``spec.transformer``), changing the last position leaves every earlier position's output unchanged;
    attention rows sum to 1 and are exactly 0 above the diagonal."""
    fw.seed(0)
    if kind == "dynamoe":
        ffn = fw.bk.DynaMoE(16, 4, 8, scope="token", noise_std=0.0)
    else:
        ffn = fw.bk.FeedForward(16, 32)
    block = fw.bk.TransformerBlock(16, 4, ffn)
    h = rng.sample_generator(3).standard_normal((2, 6, 16)).astype(np.float32)
    changed = h.copy()
    changed[:, -1] += 5.0 * rng.sample_generator(4).standard_normal((2, 16))
    out = fw.numpy(fw.call(block, fw.tensor(h, "float32"))[0])
    attention = fw.numpy(block.last_attention)
    out_changed = fw.numpy(fw.call(block, fw.tensor(changed, "float32"))[0])
    assert np.array_equal(out_changed[:, :-1], out[:, :-1])
    assert np.abs(out_changed[:, -1] - out[:, -1]).max() > 1e-3
    assert attention.shape == (2, 4, 6, 6) and attention.dtype == np.float32
    assert np.all(attention[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0.0)
    assert np.abs(attention.sum(-1) - 1.0).max() <= 1e-6  # float32: a few ulps (6e-8) of six weights
    assert probes.attention_entropy(attention).shape == (4,)  # what the probes read
    assert np.isfinite(probes.participation_ratio(fw.numpy(block.last_post_attention)))


def feed_forward(fw, cfg):
    """The framework's DynaMoE or FeedForward of layer 0 of ``cfg``, drawn from its generator."""
    if cfg.kind == "mlp":
        return fw.bk.FeedForward(cfg.hidden_dim, cfg.mlp_hidden)
    return fw.bk.DynaMoE(cfg.hidden_dim, cfg.experts_per_layer()[0], cfg.expert_hidden)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_parameter_names_order_and_initialisation(fw, kind):
    cfg = CASES[kind]
    fw.seed(1)
    block = fw.bk.TransformerBlock(cfg.hidden_dim, cfg.num_heads, feed_forward(fw, cfg))
    spec = list(common.under(param_shapes(cfg), "layers.0."))
    assert spec[:8] == list(common.ATTENTION_NAMES) and fw.spec_names(block) == spec
    assert fw.framework_names(block) == fw.expected_framework_names(spec)
    values = fw.values(block)
    bound = 1 / np.sqrt(cfg.hidden_dim)  # spec.init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in d for every attention map
    for name in common.ATTENTION_NAMES:
        assert values[name].shape == param_shapes(cfg)[f"layers.0.{name}"]
        assert 0.8 * bound < np.abs(values[name]).max() <= bound, name
    fw.seed(1)
    again = fw.values(fw.bk.TransformerBlock(cfg.hidden_dim, cfg.num_heads, feed_forward(fw, cfg)))
    assert all(np.array_equal(v, again[k]) for k, v in values.items())  # from the framework's seeded generator


def test_construction_and_call_errors(fw):
    bk = fw.bk
    fix = r"^TransformerBlock.num_heads = 3 is invalid: must divide d_model = 16: choose one of \[1, 2, 4, 8, 16\]$"
    with pytest.raises(ValueError, match=fix):
        bk.TransformerBlock(16, 3)
    with pytest.raises(ValueError, match=r"feed_forward = 'a layer of d_model = 8' is invalid: must map the block's width d_model = 16"):
        bk.TransformerBlock(16, 4, bk.FeedForward(8, 4))
    with pytest.raises(TypeError, match=r"feed_forward is a DynaMoE or FeedForward"):
        bk.TransformerBlock(16, 4, bk.DynaMoEStack(16, 2))
    with pytest.raises(ValueError, match=r"not kind 'moue'"):
        bk.TransformerBlock.from_arrays(CASES["dynamoe"].replace(kind="moue", moue=MoUEConfig(pool_size=10)), {})
    with pytest.raises(ValueError, match=r"missing \['attn.out.bias'\]"):
        arrays = common.under(init_params(CASES["mlp"], 0), "layers.0.")
        bk.TransformerBlock.from_arrays(CASES["mlp"], {k: v for k, v in arrays.items() if k != "attn.out.bias"})
    block = bk.TransformerBlock(16, 4, bk.FeedForward(16, 8))
    with pytest.raises(ValueError, match=r"reads sequences \(B, T, 16\), not an array of shape \(5, 16\)"):
        fw.call(block, fw.tensor(np.zeros((5, 16)), "float32"))
    with pytest.raises(ValueError, match="a FeedForward has no gate"):
        fw.call(block, fw.tensor(np.zeros((1, 5, 16)), "float32"), fw.tensor(np.zeros((5, 4)), "float32"))


def test_training_mode_draws_noise_and_evaluation_does_not(fw):
    fw.seed(0)
    block = fw.bk.TransformerBlock(16, 2, fw.bk.DynaMoE(16, 4, 8, balance_weight=0.01))
    h = fw.tensor(rng.sample_generator(5).standard_normal((2, 6, 16)), "float32")
    evaluate = [fw.numpy(fw.call(block, h, training=False)[0]) for _ in range(2)]
    assert np.array_equal(*evaluate)
    train = [fw.numpy(fw.call(block, h, training=True)[0]) for _ in range(2)]
    assert not np.array_equal(*train) and not np.array_equal(train[0], evaluate[0])
    noise = fw.tensor(np.full((12, 4), 0.05), "float32")  # a given noise replaces the drawn one, in any mode
    assert np.array_equal(fw.numpy(fw.call(block, h, noise, training=True)[0]), fw.numpy(fw.call(block, h, noise, training=False)[0]))
    assert all(loss > 0 for loss in fw.aux_losses(block)) and len(fw.aux_losses(block)) == 1


@pytest.mark.torch
def test_torch_gradients_state_dict_and_double():
    torch = Torch().torch
    bt = backend_or_skip("torch")
    torch.manual_seed(0)
    blocks = torch.nn.Sequential(bt.TransformerBlock(16, 4, bt.DynaMoE(16, 4, 8, balance_weight=0.01)), bt.TransformerBlock(16, 2))
    h = torch.randn(2, 6, 16)
    loss = blocks(h).square().mean() + sum(block.aux_loss for block in blocks)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks.parameters())
    other = torch.nn.Sequential(bt.TransformerBlock(16, 4, bt.DynaMoE(16, 4, 8)), bt.TransformerBlock(16, 2)).eval()
    other.load_state_dict(blocks.state_dict())
    assert torch.equal(other(h), blocks.eval()(h)) and list(blocks.state_dict())[0] == "0.attn.query.weight"
    double = blocks.double()
    assert double(h.double()).dtype == torch.float64 and double[0].feed_forward.experts.w1.dtype == torch.float64


@pytest.mark.parametrize("name", [pytest.param(name, marks=mark) for name, mark in KERAS_MARKS.items()])
def test_keras_fit_add_loss_and_keras_files(name, tmp_path):
    bk = backend_or_skip(name)
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16))
    h = bk.TransformerBlock(16, 4, bk.DynaMoE(16, 4, 8, balance_weight=0.01))(inputs)
    outputs = keras.layers.Dense(5)(bk.TransformerBlock(16, 2, bk.FeedForward(16, 32))(h))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    gen = np.random.default_rng(0)
    x, y = gen.standard_normal((32, 6, 16)).astype("float32"), gen.integers(0, 5, (32, 6))
    assert np.isfinite(model.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]).all()
    model(x[:16])
    assert len(model.losses) == 1  # the DynaMoE's balancing loss, through the block
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert np.array_equal(loaded.predict(x, batch_size=16, verbose=0), model.predict(x, batch_size=16, verbose=0))
    block = model.layers[1]
    assert type(block).from_config(block.get_config()).get_config() == block.get_config()


@pytest.mark.mlx
def test_mlx_value_and_grad_and_weights_files(tmp_path):
    fw = Mlx()
    import mlx.nn as nn

    fw.seed(0)
    block = fw.bk.TransformerBlock(16, 4, fw.bk.DynaMoE(16, 4, 8, balance_weight=0.01))
    h = fw.mx.random.normal((2, 6, 16))

    def loss(model, x):
        return model(x).square().mean() + model.aux_loss

    value, grads = nn.value_and_grad(block, loss)(block, h)
    assert set(dict(fw.tree_flatten(grads))) == set(fw.framework_names(block)) and float(block.aux_loss.item()) > 0
    block.eval()
    block.save_weights(str(tmp_path / "block.safetensors"))
    other = fw.bk.TransformerBlock(16, 4, fw.bk.DynaMoE(16, 4, 8, balance_weight=0.01))
    other.eval()
    other.load_weights(str(tmp_path / "block.safetensors"))
    assert np.array_equal(np.array(other(h)), np.array(block(h)))
