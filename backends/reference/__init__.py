"""The float64 NumPy reference: the spec's math evaluated exactly as written, the yardstick of parity."""

from .model import forward, forward_with_probes, loss, routing_stats

__all__ = ["forward", "forward_with_probes", "loss", "routing_stats"]
