"""The parity matrix machinery: real worker output, and the verdicts catch an injected disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from harness import parity
from tests.conftest import backend_or_skip

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def torch_results(tmp_path_factory):
    backend_or_skip("torch")
    return parity.run_workers(["torch"], 3, tmp_path_factory.mktemp("parity"))["torch"]


def test_a_backend_agrees_with_itself_and_the_reference(torch_results):
    twin = {k: v.copy() for k, v in torch_results.items()}
    matrix = parity.compare({"torch": torch_results, "twin": twin})
    assert parity.verdicts(matrix) == []
    e = matrix["backends"]["torch"]
    assert 0 < e["forward_float32_rel"] <= 1e-5 and e["forward_float64_abs"] <= 1e-10
    assert matrix["pairs"]["torch | twin"]["trajectory_float32_first_step_over_1e-06"] is None
    assert len(torch_results["trajectory/float32/losses"]) == len(torch_results["trajectory/float64/losses"]) == 3
    # attention's key bias has no gradient (it moves every score of a query alike): float32 rounding there
    # is not a difference between backends; the same noise on a gradient that exists is
    key_bias = "layer-transformer-block/float32/grad/attn.key.bias"
    assert np.linalg.norm(torch_results[key_bias.replace("float32", "float64")]) <= 1e-9
    noisy = {**twin, key_bias: twin[key_bias] + 1e-7}
    assert parity.verdicts(parity.compare({"torch": torch_results, "noisy": noisy})) == []
    live = "layer-transformer-block/float32/grad/attn.query.bias"
    noisy = {**twin, live: twin[live] * 1.01}
    assert "torch | noisy: gradient_float32_rel" in "\n".join(parity.verdicts(parity.compare({"torch": torch_results, "noisy": noisy})))


def test_verdicts_catch_injected_errors(torch_results):
    bad = {k: v.copy() for k, v in torch_results.items()}
    bad["small-descending/float32/eval/logits"] *= 1.001  # a 1e-3 forward error
    bad["small-descending/float32/grad/layers.0.gate.weight"] *= 1.01  # a 1e-2 gradient error
    bad["small-descending/float32/eval/mask0"] = ~bad["small-descending/float32/eval/mask0"]  # every selection flipped
    bad["trajectory/float32/losses"][2] *= 1.01
    bad["trajectory/float64/losses"][1] *= 1 + 1e-7
    matrix = parity.compare({"torch": torch_results, "bad": bad})
    failures = "\n".join(parity.verdicts(matrix))
    assert "bad: forward_float32_rel" in failures
    assert "bad: mask_unexplained" in failures
    assert "torch | bad: gradient_float32_rel" in failures
    assert "torch | bad: trajectory_float32_rel" in failures
    assert "torch | bad: trajectory_float64_rel" in failures
    assert matrix["pairs"]["torch | bad"]["trajectory_float32_first_step_over_1e-06"] == 2
    assert matrix["pairs"]["torch | bad"]["trajectory_float64_first_step_over_1e-06"] is None  # 1e-7 < 1e-6
    assert np.isfinite(matrix["backends"]["bad"]["forward_float32_rel"])


def test_the_native_layers_are_in_the_matrix_and_one_perturbed_weight_fails_them(torch_results, monkeypatch):
    """The layer cases are measured (every backend entry has them, within bounds); the same torch layer
    holding one weight moved by 1e-4, or a gradient 1% off, fails the verdict against the reference."""
    from backends import load
    from harness import parity_worker
    from harness.parity_cases import LAYER_CASES

    matrix = parity.compare({"torch": torch_results})
    assert parity.verdicts(matrix) == [] and matrix["backends"]["torch"]["layers_gradient_fd"] <= 1.0
    case = "layer-moue-stack"
    ref, block_ref = parity.layer_reference(case), parity.layer_reference("layer-transformer-block")
    inputs = parity_worker.layer_inputs

    def moved(case):
        kind, cfg, arrays, *rest = inputs(case)
        arrays = {**arrays, "pool.experts.w2": arrays["pool.experts.w2"].copy()}
        arrays["pool.experts.w2"][0, 0, 0] += 1e-4
        return kind, cfg, arrays, *rest

    monkeypatch.setattr(parity_worker, "layer_inputs", moved)
    bad = {k: v for dtype in parity_worker.DTYPES for k, v in parity_worker.layer_case(load("torch"), case, dtype).items()}
    failures = "\n".join(parity.layer_failures("moved", parity.layer_errors(bad, case, ref)))
    assert "moved: layers_forward_float64_abs" in failures, failures
    block = "layer-transformer-block"  # the Transformer block's attention, moved the same way

    def moved_attention(case):
        kind, cfg, arrays, *rest = inputs(case)
        arrays = {**arrays, "attn.query.weight": arrays["attn.query.weight"].copy()}
        arrays["attn.query.weight"][0, 0] += 1e-4
        return kind, cfg, arrays, *rest

    monkeypatch.setattr(parity_worker, "layer_inputs", moved_attention)
    bad = {k: v for dtype in parity_worker.DTYPES for k, v in parity_worker.layer_case(load("torch"), block, dtype).items()}
    assert "moved: layers_forward_float64_abs" in "\n".join(parity.layer_failures("moved", parity.layer_errors(bad, block, block_ref)))
    off = {k: v.copy() for k, v in torch_results.items() if k.startswith(f"{case}/")}
    off[f"{case}/float64/grad/pool.gate.weight"] *= 1.01
    assert "off: layers_gradient_fd" in "\n".join(parity.layer_failures("off", parity.layer_errors(off, case, ref)))
    assert set(LAYER_CASES) == {k.split("/")[0] for k in torch_results if k.startswith("layer-")}
