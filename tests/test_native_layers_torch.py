"""PyTorch's native layers (``backends.torch.DynaMoE``, ``DynaMoEStack``, ``MoUEStack``) by PyTorch's own
conventions: ``state_dict`` round trip, ``.double()``, ``torch.compile`` (``backend="aot_eager"`` on one
tiny layer: Inductor's C++ compile takes minutes on 2 cores), ``torch.func``, ``gradcheck``, the spec's
construction errors, the spec's numbers given its arrays and noise, and the README's example as written."""

from __future__ import annotations

import numpy as np
import pytest

from backends import common
from backends.spec import ModelConfig, RouterConfig, init_params, rng
from backends.spec import forward as F
from backends.spec.dynamic import gate_threshold
from backends.spec.ops import NumpyOps
from tests.conftest import backend_or_skip
from tests.readme_examples import readme_example

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bt():
    return backend_or_skip("torch")


def test_readme_example_runs_as_written(bt):
    exec(compile(readme_example("torch"), "README.md (torch)", "exec"), {})


def test_sizes_defaults_and_spec_initialisation(bt):
    torch.manual_seed(0)
    layer = bt.DynaMoE(64, 8, 32)
    assert layer.router == RouterConfig() and list(layer.state_dict()) == list(common.DYNAMOE_LAYER_NAMES)
    bound = 1 / np.sqrt(64)
    w1 = layer.experts.w1.detach().numpy()
    assert w1.shape == (8, 64, 32) and np.abs(w1).max() <= bound and np.abs(w1).max() > 0.9 * bound
    assert np.abs(layer.experts.w2.detach().numpy()).max() <= 1 / np.sqrt(32)
    stack = bt.DynaMoEStack(128, 4)
    assert [len(block.experts.b1) for block in stack.layers] == ModelConfig().experts_per_layer()  # 8, 6, 3, 1
    assert stack.layers[0].expert_hidden == ModelConfig().expert_hidden and float(stack.norm.gamma.detach().sum()) == 128


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda bt: bt.DynaMoE(8, 4, 4, tau=100), r"RouterConfig.tau = 100 is invalid"),
        (lambda bt: bt.DynaMoE(8, 4, 4, router="nope"), r"RouterConfig.kind = 'nope' is invalid"),
        (lambda bt: bt.DynaMoE(8, 4, 4, router="topk", top_k=5), r"DynaMoE.top_k = 5 is invalid: must be an integer in \[1, 4\]"),
        (lambda bt: bt.DynaMoEStack(8, 3, e_min=5, e_max=2), r"e_min = 5 > e_max = 2"),
        (lambda bt: bt.DynaMoEStack(8, 3, schedule="zigzag"), r"ScheduleConfig.name = 'zigzag' is invalid"),
        (lambda bt: bt.MoUEStack(8, 3, pool_size=4), r"MoUEStack.pool_size = 4 is invalid"),
    ],
)
def test_bad_arguments_raise_the_specs_errors(bt, build, match):
    with pytest.raises(ValueError, match=match):
        build(bt)


def test_given_arrays_and_noise_are_the_spec(bt):
    cfg = ModelConfig(size="tiny", router=RouterConfig(k_min=2, balance_weight=0.01))
    p = init_params(cfg, 0)
    h, noise = rng.sample_generator(0).standard_normal((2, 12, 64)), rng.gate_noise(0, 0, 0, (24, 8), 0.1)
    layer = bt.DynaMoE.from_arrays(cfg.router, common.under(p, "layers.0."), dtype="float64")
    y, routing = layer.forward_with_routing(torch.as_tensor(h), torch.as_tensor(noise))
    expected, ref = F.dynamoe_layer(NumpyOps(), F.layer_params(p, cfg, 0), h.reshape(24, 64), noise, cfg.router)
    assert y.shape == (2, 12, 64) and np.abs(y.detach().numpy().reshape(24, 64) - expected).max() <= 1e-12
    assert np.array_equal(routing.mask.numpy(), ref.mask) and np.array_equal(layer.last_counts.numpy(), ref.mask.sum(0))
    assert float(layer.aux_loss) > 0
    stack = bt.DynaMoEStack.from_arrays(cfg, {k: p[k] for k in common.stack_shapes(cfg)}, dtype="float64")
    model = bt.build_model(cfg, p, "float64", device="cpu")
    noises = [torch.as_tensor(rng.gate_noise(0, 0, i, (24, e), 0.1)) for i, e in enumerate(cfg.experts_per_layer())]
    x = torch.as_tensor(rng.sample_generator(1).random((24, 784)))
    hidden, _ = model.hidden(x, noises)
    with torch.no_grad():
        assert torch.equal(stack(F.embed(bt.OPS, dict(model.named_parameters()), x, cfg), noises), hidden)


def test_training_mode_draws_noise_and_eval_does_not(bt):
    torch.manual_seed(0)
    layer, h = bt.DynaMoE(16, 4, 8), torch.randn(32, 16)
    layer.eval()
    assert torch.equal(layer(h), layer(h))
    layer.train()
    assert not torch.equal(layer(h), layer(h))
    torch.manual_seed(1)
    a = layer(h)
    torch.manual_seed(1)
    assert torch.equal(layer(h), a)


def test_state_dict_double_and_device(bt):
    torch.manual_seed(0)
    stack = bt.MoUEStack(16, 3, pool_size=6, e_max=4, local_experts=1).eval()
    h = torch.randn(10, 16)
    other = bt.MoUEStack(16, 3, pool_size=6, e_max=4, local_experts=1).eval()
    other.load_state_dict(stack.state_dict())
    assert torch.equal(other(h), stack(h)) and list(stack.state_dict())[0] == "pool.experts.w1"
    double = stack.double().to("cpu")
    assert double(h.double()).dtype == torch.float64 and double.pool.experts.w1.dtype == torch.float64


def test_torch_compile_and_torch_func(bt):
    torch.manual_seed(0)
    layer = bt.DynaMoE(8, 4, 4).eval()
    h = torch.randn(16, 8)
    compiled = torch.compile(layer, backend="aot_eager")
    assert torch.allclose(compiled(h), layer(h), atol=1e-6)
    params = dict(layer.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (h,)).square().sum())(params)
    assert set(grads) == set(params) and all(g.shape == params[k].shape for k, g in grads.items())


def test_gradcheck_float64(bt):
    # Noise off (eval), inputs whose gates sit away from the threshold: the routing is piecewise constant, so
    # gradcheck's 1e-6 perturbations must not flip a selection; where it is constant the layer is smooth.
    torch.manual_seed(3)
    layer = bt.DynaMoE(6, 4, 5, dtype="float64").eval()
    h = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    probs = layer.forward_with_routing(h)[1].probs.detach().numpy()
    assert np.abs(probs - gate_threshold(probs, 70, "batch")).min() > 1e-4
    assert torch.autograd.gradcheck(lambda h, *w: layer(h), (h, *layer.parameters()), eps=1e-6, atol=1e-7, rtol=1e-5)
