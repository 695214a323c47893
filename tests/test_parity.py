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
