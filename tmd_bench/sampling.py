"""Samplers as pure functions of (velocity, noise, timesteps), in the style of k-diffusion.

``velocity(x, t)`` is any callable returning the flow velocity at a batch ``x`` and a scalar
time ``t`` ∈ [0, 1] (t = 1 noise). Conditioning and classifier-free guidance are bound into it
with :func:`guided`, so counting NFE or timing the network is a wrapper around the network,
never a change to a sampler.
"""

from __future__ import annotations

from typing import Callable

import torch

from tmd_bench import flow

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided(net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], text: torch.Tensor,
           negative: torch.Tensor, scale: float) -> Velocity:
    """Classifier-free guidance ``v = v(∅) + w·(v(c) − v(∅))`` as one batched pass of 2B rows
    (so a guided step costs 2 NFE). ``scale == 1`` is the plain conditional velocity (1 NFE).
    ``scale`` may be a function of t (Wan2.2 A14B: each expert has its own scale).

    The network runs in its compute dtype; the combination is formed in float32 (WanPipeline forms
    it in the compute dtype, which only adds bf16 rounding)."""
    if not callable(scale) and scale == 1.0:
        return lambda x, t: net(x, t, text)
    negative = negative.expand(text.shape[0], -1, -1)
    both_text = torch.cat([negative, text])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = scale(t) if callable(scale) else scale  # a two-expert teacher: the scale of t's expert
        if isinstance(w, torch.Tensor):
            w = w.to(x.device).view(-1, *([1] * (x.ndim - 1)))
        v_uncond, v_cond = net(torch.cat([x, x]), t, both_text).float().chunk(2)
        return v_uncond + w * (v_cond - v_uncond)

    return velocity


@torch.no_grad()
def sample_euler(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Euler on the flow ODE ``dx/dt = v``: ``x_{t'} = x_t + (t' − t)·v(x_t, t)`` along the
    decreasing grid ``ts`` (one velocity call per interval). ``x`` keeps its dtype (float32
    latents): only the network runs in the compute dtype."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, t.to(torch.float32))
        x = x + (t_next - t).to(x.dtype) * v.to(x.dtype)
    return x


# Wan's own UniPC configuration (WanPipeline's scheduler in the Wan2.1 diffusers checkpoints).
WAN_UNIPC_CONFIG = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000)


def unipc_scheduler(steps: int, shift: float, config: dict | None = None):
    """diffusers' UniPC in flow-prediction mode: the checkpoint's own scheduler config when it is a
    UniPC one (as WanPipeline loads it), else Wan's; ``flow_shift`` = ``shift``."""
    from diffusers import UniPCMultistepScheduler

    if config and config.get("_class_name") == "UniPCMultistepScheduler":
        sched = UniPCMultistepScheduler.from_config(config, flow_shift=shift)
    else:
        sched = UniPCMultistepScheduler(**WAN_UNIPC_CONFIG, flow_shift=shift)
    sched.set_timesteps(steps)
    return sched


def flowmatch_euler_scheduler(steps: int, shift: float, config: dict | None = None):
    """diffusers' FlowMatchEulerDiscreteScheduler (the checkpoint's config when it is one), ``shift`` set."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if config and config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
        sched = FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def sample_scheduler(velocity: Velocity, x: torch.Tensor, sched) -> torch.Tensor:
    """The loop of diffusers' WanPipeline over a configured scheduler: at each of its timesteps the
    network sees that timestep exactly (UniPC's int64 ``int(1000·σ)``, FlowMatch's float ``1000·σ``,
    passed as ``t = timestep / 1000`` in float64 so ``1000·t`` recovers it), and the scheduler steps
    float32 latents with the velocity as its flow prediction."""
    sched.set_begin_index(0)
    x = x.float()
    for timestep in sched.timesteps:
        v = velocity(x, timestep.to(torch.float64) / 1000)
        x = sched.step(v.float(), timestep, x, return_dict=False)[0]
    return x


def sample_unipc(velocity: Velocity, x: torch.Tensor, steps: int, shift: float,
                 config: dict | None = None) -> torch.Tensor:
    """UniPC multistep (Zhao et al., 2023; Wan's default solver) through diffusers' scheduler,
    exactly as WanPipeline runs it: one velocity call per step."""
    return sample_scheduler(velocity, x, unipc_scheduler(steps, shift, config))


def sample_flowmatch_euler(velocity: Velocity, x: torch.Tensor, steps: int, shift: float,
                           config: dict | None = None) -> torch.Tensor:
    """Euler through diffusers' FlowMatchEulerDiscreteScheduler, as WanPipeline would run it: its grid
    is ``shift(linspace(1, σ_min, k))`` then 0, not tmd-bench's uniform ``shift(linspace(1, 0, k+1))``."""
    return sample_scheduler(velocity, x, flowmatch_euler_scheduler(steps, shift, config))


def euler_grid(steps: int, shift: float) -> torch.Tensor:
    """tmd-bench's uniform-grid Euler (method ``teacher-euler``): ``shift(linspace(1, 0, k + 1))``,
    from 1 (pure noise, as Wan samples) to 0. Not diffusers' FlowMatchEuler grid (``teacher-fmeuler``)."""
    return flow.time_grid(steps, shift, t_max=1.0)
