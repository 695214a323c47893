"""Configuration validation: a bad value names the field, the value and the allowed range."""

from __future__ import annotations

import pytest

from backends.spec import ModelConfig, RouterConfig, ScheduleConfig, TrainConfig, model_size


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ScheduleConfig("descending", 8, 2), r"e_min = 8 > e_max = 2"),
        (lambda: ScheduleConfig("zigzag"), r"ScheduleConfig.name = 'zigzag' .* one of uniform, descending"),
        (lambda: ScheduleConfig(e_min=0), r"ScheduleConfig.e_min = 0 .* integer in \[1"),
        (lambda: RouterConfig(tau=0), r"RouterConfig.tau = 0 .* open interval \(0, 100\)"),
        (lambda: RouterConfig(tau=100.0), r"RouterConfig.tau = 100.0"),
        (lambda: RouterConfig(tau=0.7 * 200), r"RouterConfig.tau = 140"),
        (lambda: RouterConfig(temperature=0), r"RouterConfig.temperature = 0 .* > 0"),
        (lambda: RouterConfig(noise_std=-0.1), r"RouterConfig.noise_std = -0.1"),
        (lambda: RouterConfig(k_min=3, k_max=2), r"RouterConfig.k_max = 2 .* \[3, inf\]"),
        (lambda: RouterConfig(scope="global"), r"RouterConfig.scope = 'global' .* batch, token"),
        (lambda: ModelConfig(size="huge"), r"unknown model size 'huge': choose one of tiny, small, medium, large"),
        (lambda: ModelConfig(kind="cnn"), r"ModelConfig.kind = 'cnn'"),
        (lambda: ModelConfig(expert_hidden_ratio=0), r"ModelConfig.expert_hidden_ratio = 0"),
        (lambda: TrainConfig(lr=0), r"TrainConfig.lr = 0 .* > 0"),
        (lambda: TrainConfig(beta2=1.0), r"TrainConfig.beta2 = 1.0 .* \[0, 1\)"),
        (lambda: TrainConfig(batch_size=0), r"TrainConfig.batch_size = 0"),
    ],
)
def test_bad_values_raise_a_clear_error(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_defaults_are_the_papers():
    r, t, s = RouterConfig(), TrainConfig(), ScheduleConfig()
    assert (r.tau, r.temperature, r.noise_std, r.k_min) == (70.0, 0.5, 0.1, 1)  # Table 7 best values
    assert (t.lr, t.batch_size, t.epochs) == (1e-3, 256, 20)  # Section 5.3
    assert (s.e_max, s.e_min) == (8, 1)  # Section 7.9 / Table 3
    assert [(model_size(n).num_layers, model_size(n).hidden_dim) for n in ("tiny", "small", "medium", "large")] == [
        (2, 64),
        (4, 128),
        (6, 256),
        (8, 512),
    ]  # Table 1


def test_layer_bounds_clamp_to_the_layer():
    assert RouterConfig().layer_bounds(8) == (1, 8)  # k_max defaults to E_l
    assert RouterConfig(k_min=2, k_max=4).layer_bounds(8) == (2, 4)
    assert RouterConfig(k_min=2, k_max=4).layer_bounds(1) == (1, 1)  # a one-expert layer
    assert ModelConfig().experts_per_layer() == [8, 6, 3, 1]
