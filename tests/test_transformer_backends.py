"""The Transformer backbone in every framework backend against the float64 reference
(``tests/backend_checks.check_transformer_parity``), and its models' contract: spec names in spec order,
shape and dtype errors, weights files across backends.

Run per backend marker, like the backends' own tests::

    python -m pytest -m torch tests/test_transformer_backends.py
    KERAS_BACKEND=jax python -m pytest -m keras_jax tests/test_transformer_backends.py
    KERAS_BACKEND=torch python -m pytest -m keras_torch tests/test_transformer_backends.py
    python -m pytest -m mlx tests/test_transformer_backends.py
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from backends.spec import init_params
from harness.parity_cases import TRANSFORMER_CASES
from tests.backend_checks import check_transformer_parity
from tests.conftest import backend_or_skip

KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "jax")
BACKENDS = [
    pytest.param("torch", marks=pytest.mark.torch),
    pytest.param(
        f"keras-{KERAS_BACKEND}",
        marks={"jax": pytest.mark.keras_jax, "torch": pytest.mark.keras_torch}.get(KERAS_BACKEND, pytest.mark.skip),
    ),
    pytest.param("mlx", marks=pytest.mark.mlx),
]


def _load(name: str):
    backend = backend_or_skip(name)
    return backend, importlib.import_module(f"{backend.__name__}.transformer")


@pytest.mark.parametrize("case", TRANSFORMER_CASES)
@pytest.mark.parametrize("name", BACKENDS)
def test_transformer_parity(name, case):
    backend, module = _load(name)
    errors = check_transformer_parity(backend, module, case)
    print(name, case, {k: f"{v:.1e}" for k, v in errors.items()})


@pytest.mark.parametrize("name", BACKENDS)
def test_transformer_models_refuse_wrong_arrays_and_share_weights_files(name, tmp_path):
    backend, module = _load(name)
    cfg = TRANSFORMER_CASES["transformer-moue"]
    params = init_params(cfg, 0)
    bad = dict(params, **{"layers.0.attn.key.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'layers.0.attn.key.bias' has shape \(3,\)"):
        module.build_model(cfg, bad)
    with pytest.raises(ValueError, match="missing"):
        module.build_model(cfg, {k: v for k, v in params.items() if k != "layers.1.attn.value.weight"})
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        module.build_model(cfg, params, "float16")
    model = module.build_model(cfg, params)
    exported = backend.export_params(model)
    assert list(exported) == list(params) and all(exported[k].dtype == np.float32 for k in exported)
    path = tmp_path / "w.npz"
    backend.save_weights(model, path)
    again = backend.load_weights(module.build_model(cfg, init_params(cfg, 1)), path)
    assert all(np.array_equal(backend.export_params(again)[k], exported[k]) for k in exported)
    flat = cfg.replace(backbone="mlp")  # every other config goes to the backend's own build_model
    assert list(backend.export_params(module.build_model(flat, init_params(flat, 0)))) == list(init_params(flat, 0))


@pytest.mark.parametrize("name", BACKENDS)
def test_transformer_models_keep_the_model_contract_and_their_hidden_states_are_the_references(name):
    """``hidden`` (what a user's own head or probe reads) of the Transformer model, float64, against
    ``spec.forward.model_hidden`` on NumPy: the same arithmetic, so only the order of float64 additions
    differs (bound 1e-12 against values of order 1). Its logits are ``test_transformer_parity``'s."""
    from backends.api import ModelLike
    from backends.spec import forward as F
    from backends.spec.ops import NumpyOps

    backend, module = _load(name)
    cfg = TRANSFORMER_CASES["transformer-dynamoe"]
    params = init_params(cfg, 0)
    model = module.build_model(cfg, params, "float64")
    assert isinstance(model, ModelLike)
    x = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 16))
    ops = NumpyOps(np.float64)
    want_h, want_routings = F.model_hidden(ops, params, x, cfg)
    h, routings = model.hidden(backend.to_tensor(model, x))
    got_h = np.asarray(_numpy(name, h))
    assert got_h.shape == (2 * 16, cfg.hidden_dim)
    np.testing.assert_allclose(got_h, want_h, rtol=0, atol=1e-12)
    assert [np.array_equal(_numpy(name, r.mask), w.mask) for r, w in zip(routings, want_routings)] == [True] * cfg.num_layers


def _numpy(name: str, t) -> np.ndarray:
    if name == "torch":
        return t.detach().cpu().numpy()
    if name == "mlx":
        return np.array(t)
    import keras

    return keras.ops.convert_to_numpy(t)
