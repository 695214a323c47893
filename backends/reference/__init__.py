"""The float64 NumPy reference: the spec's math evaluated exactly as written, the yardstick of parity."""

from .model import forward, loss, routing_stats

__all__ = ["forward", "loss", "routing_stats"]
