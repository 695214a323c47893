"""The DynaMoE reproduction harness: data, training loops, experiments, results, reports (``python -m harness``)."""
