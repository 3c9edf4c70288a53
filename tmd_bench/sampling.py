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
    (so a guided step costs 2 NFE). ``scale == 1`` is the plain conditional velocity (1 NFE)."""
    if scale == 1.0:
        return lambda x, t: net(x, t, text)
    negative = negative.expand(text.shape[0], -1, -1)
    both_text = torch.cat([negative, text])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_uncond, v_cond = net(torch.cat([x, x]), t, both_text).chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    return velocity


@torch.no_grad()
def sample_euler(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Euler on the flow ODE ``dx/dt = v``: ``x_{t'} = x_t + (t' − t)·v(x_t, t)`` along the
    decreasing grid ``ts`` (one velocity call per interval)."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, t.to(torch.float32))
        x = x + (t_next - t).to(x.dtype) * v.to(x.dtype)
    return x


def unipc_scheduler(steps: int, shift: float):
    """diffusers' UniPC in flow-prediction mode, configured as Wan's pipeline configures it."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    num_train_timesteps=1000, flow_shift=shift)
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def sample_unipc(velocity: Velocity, x: torch.Tensor, steps: int, shift: float) -> torch.Tensor:
    """UniPC multistep (Zhao et al., 2023; Wan's default solver) through diffusers' scheduler,
    one velocity call per step."""
    sched = unipc_scheduler(steps, shift)
    for i, timestep in enumerate(sched.timesteps):
        # the scheduler's integer timestep is a rounded 1000·σ; the network gets the exact σ
        v = velocity(x, sched.sigmas[i].to(torch.float32))
        x = sched.step(v, timestep, x, return_dict=False)[0]
    return x


def euler_grid(steps: int, shift: float) -> torch.Tensor:
    """The teacher's Euler grid: shifted uniform, from 1 (pure noise, as Wan samples) to 0."""
    return flow.time_grid(steps, shift, t_max=1.0)
