"""tmd-bench: evaluation-first few-step video diffusion (TMD and baselines).

``TMDPipeline`` and ``FewStepPipeline`` (diffusers pipelines of distilled students) are imported on
first use, so that ``import tmd_bench`` (and the CLI's start-up) does not import diffusers."""
__version__ = "0.1.0"

_PIPELINES = ("TMDPipeline", "FewStepPipeline", "TMDHead", "MeanFlowTime")


def __getattr__(name: str):
    if name in _PIPELINES:
        from tmd_bench import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'tmd_bench' has no attribute {name!r}")
