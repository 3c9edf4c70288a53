"""tmd-bench: evaluation-first few-step video diffusion (TMD and baselines)."""
__version__ = "0.1.0"
