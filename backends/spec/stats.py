"""Per-layer routing statistics (Table 6) from selection counts, shared by every backend."""

from __future__ import annotations

import numpy as np


def layer_stats(counts, tokens: int) -> dict:
    """Statistics of one layer from ``counts[i]`` = tokens that selected expert i, over ``tokens`` tokens.

    ``avg_active``: mean experts per token; ``utilisation``: avg_active / E (Table 6's column, in [0, 1]);
    ``usage``: each expert's share of all selections; ``entropy_bits``: Shannon entropy of ``usage``
    in bits (Table 6's unit: its 1.45 for 3 experts exceeds ln 3 but not log2 3).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    usage = counts / total if total > 0 else np.zeros_like(counts)
    nonzero = usage[usage > 0]
    avg = total / tokens if tokens else 0.0
    return {
        "experts": int(counts.shape[0]),
        "avg_active": float(avg),
        "utilisation": float(avg / counts.shape[0]),
        "usage": [float(u) for u in usage],
        "entropy_bits": float(max(0.0, -(nonzero * np.log2(nonzero)).sum())),
    }
