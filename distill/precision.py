"""Float32 islands: the few computations that bf16 cannot carry.

Networks train and sample in their compute dtype (bf16 on a GPU for Wan). Two things need more:
losses and their normalisations (``distill/losses.py`` upcasts them), and the **finite differences**
of TM-MF / MeanFlow targets: ``[u(z + δv, t + δ) − u(z − δv, t − δ)] / 2δ`` with δ = 5e-3 is a
difference of two nearly equal network outputs, and bf16 carries ~3 significant digits — its
rounding (≈ 4e-3 near 1) is as large as the difference itself, and z ± δv rounds to the same bf16
input. :func:`float32_island` runs a module in float32 for such a block: no-op when it already is.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def float32_island(module: torch.nn.Module):
    """Inside the block, ``module``'s low-precision parameters are float32 copies; on exit the original
    tensors are put back (bit-exact: nothing is re-rounded). Yields whether anything was upcast.

    For no-grad target computations only. Sharded (DTensor) parameters are left as they are: under
    FSDP2 the mixed-precision policy decides the compute dtype."""
    low = [(p, p.data) for p in module.parameters()
           if p.is_floating_point() and p.dtype != torch.float32 and type(p.data) is torch.Tensor]
    for p, data in low:
        p.data = data.float()
    try:
        yield bool(low)
    finally:
        for p, data in low:
            p.data = data
