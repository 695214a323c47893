"""The core's two model kinds (``spec.kinds``): DynaMoE (Section 3.4) and the dense MLP baseline.

- ``"dynamoe"``: layer l holds a gate (d, E_l) and E_l experts, ``h + sum_{i in S} w_i E_i(h)`` (Eq. 6;
  ``forward.dynamoe_layer``); per token it costs ``E[k_l] 4 d d_h + 2 d E_l`` FLOPs (Eq. 15).
- ``"mlp"``: layer l is one feed-forward block of width ``mlp_hidden``, ``h + FFN(h)``: ``4 d h`` FLOPs.
"""

from __future__ import annotations

from .accounting import expert_flops
from .config import ModelConfig
from .forward import dynamoe_layer, feed_forward, layer_params
from .kinds import Kind, register


class DynaMoE(Kind):
    def layer_shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        d, dh = cfg.hidden_dim, cfg.expert_hidden
        shapes = {}
        for layer, experts in enumerate(cfg.experts_per_layer()):
            prefix = f"layers.{layer}."
            shapes[prefix + "gate.weight"] = (d, experts)
            shapes[prefix + "experts.w1"] = (experts, d, dh)
            shapes[prefix + "experts.b1"] = (experts, dh)
            shapes[prefix + "experts.w2"] = (experts, dh, d)
            shapes[prefix + "experts.b2"] = (experts, d)
        return shapes

    def layers(self, ops, params: dict, h, cfg: ModelConfig, noises=None):
        routings = []
        for layer in range(cfg.num_layers):
            y, routing = dynamoe_layer(ops, layer_params(params, cfg, layer), h, None if noises is None else noises[layer], cfg.router)
            routings.append(routing)
            h = h + y
        return h, routings

    def block(self, ops, params: dict, layer: int, h, state, cfg: ModelConfig, noise=None):
        y, routing = dynamoe_layer(ops, layer_params(params, cfg, layer), h, noise, cfg.router)
        return y, routing, state

    def layer_widths(self, cfg: ModelConfig) -> list[int]:
        return cfg.experts_per_layer()

    def layer_flops(self, cfg: ModelConfig, layer: int, active: float | None) -> float:
        return active * expert_flops(cfg) + 2.0 * cfg.hidden_dim * self.layer_widths(cfg)[layer]


class MLP(Kind):
    def layer_shapes(self, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        d, h = cfg.hidden_dim, cfg.mlp_hidden
        shapes = {}
        for layer in range(cfg.num_layers):
            prefix = f"layers.{layer}.ffn."
            shapes.update({prefix + "w1": (d, h), prefix + "b1": (h,), prefix + "w2": (h, d), prefix + "b2": (d,)})
        return shapes

    def layers(self, ops, params: dict, h, cfg: ModelConfig, noises=None):
        for layer in range(cfg.num_layers):
            p = layer_params(params, cfg, layer)
            h = h + feed_forward(ops, h, p["w1"], p["b1"], p["w2"], p["b2"])
        return h, []

    def block(self, ops, params: dict, layer: int, h, state, cfg: ModelConfig, noise=None):
        p = layer_params(params, cfg, layer)
        return feed_forward(ops, h, p["w1"], p["b1"], p["w2"], p["b2"]), None, state

    def layer_widths(self, cfg: ModelConfig) -> list[int]:
        return []

    def layer_flops(self, cfg: ModelConfig, layer: int, active: float | None) -> float:
        return 4.0 * cfg.hidden_dim * cfg.mlp_hidden


register("dynamoe", DynaMoE())
register("mlp", MLP())
