"""Keras's native layers by Keras's own conventions, on the backend this process runs (``keras_jax`` or
``keras_torch``): ``keras.Sequential`` and the functional API, ``model.fit``, ``add_loss``,
``get_config``/``from_config``, ``model.save``/``keras.saving.load_model`` with identical predictions, the
spec's construction errors, and the README's example as written (in a subprocess with ``KERAS_BACKEND``)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, backend_or_skip
from tests.readme_examples import readme_example

BACKENDS = [pytest.param("keras-jax", marks=pytest.mark.keras_jax), pytest.param("keras-torch", marks=pytest.mark.keras_torch)]


@pytest.fixture(params=BACKENDS)
def bk(request):
    return backend_or_skip(request.param)


def test_readme_example_runs_as_written(bk):
    env = dict(os.environ, KERAS_BACKEND=bk.NAME.split("-")[1], PYTHONPATH=str(REPO))
    code = readme_example("keras")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_functional_fit_save_and_load(bk, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16))
    h = bk.DynaMoEStack(16, 2, e_max=4, expert_hidden=8, balance_weight=0.01)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(bk.MoUEStack(16, 2, pool_size=6, e_max=4, trajectory_dim=2)(h)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    gen = np.random.default_rng(0)
    x, y = gen.standard_normal((64, 6, 16)).astype("float32"), gen.integers(0, 3, 64)
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    model(x[:32])
    assert len(model.losses) == 1  # the DynaMoE stack's balancing loss (add_loss), which fit adds to the loss
    assert any(not np.array_equal(a, keras.ops.convert_to_numpy(v)) for a, v in zip(before, model.trainable_variables))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert np.array_equal(loaded.predict(x, batch_size=32, verbose=0), model.predict(x, batch_size=32, verbose=0))
    stack = model.layers[1]
    assert type(stack).from_config(stack.get_config()).get_config() == stack.get_config()
    assert [tuple(v.shape) for v in stack.last_counts] == [(4,), (1,)] and keras.ops.convert_to_numpy(stack.last_avg_active).shape == (2,)


def test_sequential_training_noise_and_errors(bk):
    import keras

    keras.utils.set_random_seed(1)
    layer = bk.DynaMoE(16, 4, 8, seed=3)
    model = keras.Sequential([keras.Input((16,)), layer])
    x = np.random.default_rng(0).standard_normal((32, 16)).astype("float32")
    a, b = model(x, training=False), model(x, training=False)
    assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    c = model(x, training=True)
    assert not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(c))
    assert float(keras.ops.convert_to_numpy(layer.last_avg_active)) >= 1
    with pytest.raises(ValueError, match=r"RouterConfig.tau = 0 is invalid"):
        bk.DynaMoE(16, 4, 8, tau=0)
    with pytest.raises(ValueError, match=r"e_min = 3 > e_max = 2"):
        bk.DynaMoEStack(16, 2, e_min=3, e_max=2)
