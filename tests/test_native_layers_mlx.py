"""MLX's native layers by MLX's own conventions: ``save_weights``/``load_weights`` round trip, ``mx.compile``
and ``nn.value_and_grad``, training-mode noise from ``mx.random``, the spec's numbers given its arrays and
noise, and the README's example as written."""

from __future__ import annotations

import numpy as np
import pytest

from backends import common
from backends.spec import ModelConfig, RouterConfig, init_params, rng
from backends.spec import forward as F
from backends.spec.ops import NumpyOps
from tests.conftest import backend_or_skip
from tests.readme_examples import readme_example

pytestmark = pytest.mark.mlx


@pytest.fixture(scope="module")
def bm():
    return backend_or_skip("mlx")


def test_readme_example_runs_as_written(bm):
    exec(compile(readme_example("mlx"), "README.md (mlx)", "exec"), {})


def test_given_arrays_and_noise_are_the_spec(bm):
    import mlx.core as mx

    cfg = ModelConfig(size="tiny", router=RouterConfig(k_min=2))
    p = init_params(cfg, 0)
    h, noise = rng.sample_generator(0).standard_normal((2, 12, 64)), rng.gate_noise(0, 0, 0, (24, 8), 0.1)
    layer = bm.DynaMoE.from_arrays(cfg.router, common.under(p, "layers.0."), dtype="float64")
    y, routing = layer.forward_with_routing(mx.array(h, dtype=mx.float64), mx.array(noise, dtype=mx.float64))
    expected, ref = F.dynamoe_layer(NumpyOps(), F.layer_params(p, cfg, 0), h.reshape(24, 64), noise, cfg.router)
    assert y.shape == (2, 12, 64) and np.abs(np.array(y).reshape(24, 64) - expected).max() <= 1e-12
    assert np.array_equal(np.array(routing.mask), ref.mask) and np.array_equal(np.array(layer.last_counts), ref.mask.sum(0))
    with pytest.raises(ValueError, match=r"DynaMoE.top_k = 9 is invalid"):
        bm.DynaMoE(8, 4, 4, router="topk", top_k=9)


def test_noise_in_training_mode_only(bm):
    import mlx.core as mx

    mx.random.seed(0)
    layer, h = bm.DynaMoE(16, 4, 8), mx.random.normal((32, 16))
    assert layer.training and not np.array_equal(np.array(layer(h)), np.array(layer(h)))
    layer.eval()
    assert np.array_equal(np.array(layer(h)), np.array(layer(h)))


def test_save_load_compile_and_value_and_grad(bm, tmp_path):
    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(0)
    stack = bm.MoUEStack(16, 3, pool_size=6, e_max=4, local_experts=1, balance_weight=0.01)
    stack.eval()
    h = mx.random.normal((10, 16))
    stack.save_weights(str(tmp_path / "stack.safetensors"))
    other = bm.MoUEStack(16, 3, pool_size=6, e_max=4, local_experts=1, balance_weight=0.01)
    other.eval()
    other.load_weights(str(tmp_path / "stack.safetensors"))
    assert np.array_equal(np.array(other(h)), np.array(stack(h)))
    compiled = mx.compile(lambda x: stack(x))
    assert np.allclose(np.array(compiled(h)), np.array(stack(h)), atol=1e-6)

    def loss(model, x):
        return model(x).square().mean() + model.aux_loss

    value, grads = nn.value_and_grad(stack, loss)(stack, h)
    assert float(stack.aux_loss.item()) > 0 and set(dict(tree_flatten(grads))) == set(dict(tree_flatten(stack.trainable_parameters())))


def tree_flatten(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)
