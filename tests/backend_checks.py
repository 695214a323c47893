"""Checks every framework backend must pass, called from each backend's test file."""

from __future__ import annotations

import numpy as np
import pytest

from backends.spec import ModelConfig, init_params


def check_export_roundtrip_and_shape_errors(backend, cfg: ModelConfig) -> None:
    """Spec arrays go in and come back unchanged (float64), as float32 in a float32 model, and a wrong
    name, shape or dtype is refused with a message naming it."""
    params = init_params(cfg, 0)
    exported = backend.export_params(backend.build_model(cfg, params, "float64"))
    assert list(exported) == list(params) and all(np.array_equal(exported[k], params[k]) for k in params)
    exported32 = backend.export_params(backend.build_model(cfg, params))
    assert all(exported32[k].dtype == np.float32 and np.array_equal(exported32[k], params[k].astype(np.float32)) for k in params)
    bad = dict(params, **{"head.bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'head.bias' has shape \(3,\), the config needs \(10,\)"):
        backend.build_model(cfg, bad)
    with pytest.raises(ValueError, match="missing"):
        backend.build_model(cfg, {k: v for k, v in params.items() if k != "norm.beta"})
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        backend.build_model(cfg, params, "float16")
