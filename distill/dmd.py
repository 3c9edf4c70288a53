"""The DMD2-v training step shared by TMD stage 2 and the DMD2-v baseline (spec tmd.md §8).

Per iteration, with ``t ~ shift_5(U[0.001, 0.999])`` and ``x̂_t = (1 − t)·x̂ + t·ε``:

- every ``student_every``-th iteration, the **student**: ``L = VSD(x̂; g_T, g_F) + λ·GAN_G``, with
  ``g_T`` the teacher's CFG x0-prediction, ``g_F`` the fake score's, and the GAN term through the
  discriminator on teacher features of ``x̂_t`` — gradients flow into whatever ``student_sample``
  ran (for TMD: every inner step of the rollout and the backbone);
- otherwise the **critics**: the fake score by DSM on ``sg(x̂)``, the discriminator by the logistic
  loss on fake ``x̂_t`` vs real clips noised with the same t and ε.

A method only defines ``student_sample(x, text, generator) -> x̂``.
"""

from __future__ import annotations

import torch
from tmd_bench.distill import critics, losses

from tmd_bench import distributed, flow


def _randn(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return distributed.randn(shape, g).to(like.device, like.dtype)


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *[1] * (like.ndim - 1)).to(like.dtype)


class DMDStep:
    """DMD2-v with two time scales. ``config`` needs: seed, grad_clip, teacher_guidance,
    gan_weight, critic_t_shift, student_every, disc_blocks."""

    name = "dmd"
    loss_names = ("vsd", "gan_g", "dsm", "disc")
    generator_stage = 2  # salt of the per-iteration generator

    def __init__(self, teacher, student: torch.nn.Module, cfg, lr: float):
        self.teacher, self.student, self.config = teacher, student.train().requires_grad_(True), cfg
        teacher.transformer.eval().requires_grad_(False)  # frozen; gradients pass through it to x̂ only
        self.fake = critics.FakeScore(teacher.transformer)
        self.blocks = tuple(cfg.disc_blocks or critics.discriminator_blocks(teacher.num_blocks))
        dim = teacher.transformer.config.num_attention_heads * teacher.transformer.config.attention_head_dim
        self.disc = critics.Discriminator(dim, len(self.blocks), seed=cfg.seed).to(teacher.device)
        # β1 = 0 for all three networks, as DMD2 does for its two-time-scale updates
        self.opts = {name: torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.0, 0.99))
                     for name, m in self.modules().items()}
        self.negative = teacher.encode_text([teacher.spec.negative_prompt])

    def student_sample(self, x: torch.Tensor, text: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def modules(self):
        return {"student": self.student, "fake_score": self.fake, "discriminator": self.disc}

    def optimizers(self):
        return self.opts

    shardable = True  # runs on several processes (tmd_bench.distributed)

    def step(self, batch, iteration: int) -> dict[str, float]:
        cfg = self.config
        seed = cfg.seed * 1_000_003 + self.generator_stage * 100_003 + iteration
        if iteration % cfg.student_every == cfg.student_every - 1:
            return distributed.optimise(self, batch, seed, ("student",), self._student_losses, cfg.grad_clip)
        return distributed.optimise(self, batch, seed, ("fake_score", "discriminator"), self._critic_losses,
                                    cfg.grad_clip)

    def _draws(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = flow.shift(0.001 + 0.998 * distributed.rand(x.shape[0], g), self.config.critic_t_shift).to(x.device)
        return t, _randn(x.shape, g, x)

    def _student_losses(self, batch, g: torch.Generator):
        """The student's turn: VSD through the teacher and fake score, plus the GAN generator term."""
        cfg = self.config
        x, text = batch.clips, batch.text
        t, eps = self._draws(x, g)
        x_hat = self.student_sample(x, text, g)
        x_hat_t = flow.interpolate(x_hat, eps, t)
        g_teacher = critics.teacher_x0(self.teacher, x_hat_t.detach(), t, text, self.negative, cfg.teacher_guidance)
        with torch.no_grad():
            g_fake = self.fake(x_hat_t.detach(), t, text)
        l_vsd = losses.vsd_loss(x_hat, g_teacher, g_fake)
        feats = critics.teacher_features(self.teacher, x_hat_t, t, text, self.blocks)
        l_gan = losses.gan_generator_loss(self.disc(feats))
        return l_vsd + cfg.gan_weight * l_gan, {"vsd": l_vsd.detach(), "gan_g": l_gan.detach()}

    def _critic_losses(self, batch, g: torch.Generator):
        """The critics' turn: DSM for the fake score and the logistic loss for the discriminator
        (disjoint parameters: one backward of their sum is the two separate updates)."""
        x, text = batch.clips, batch.text
        t, eps = self._draws(x, g)
        with torch.no_grad():
            x_hat = self.student_sample(x, text, g)
            x_hat_t = flow.interpolate(x_hat, eps, t)
            real_t = flow.interpolate(x, eps, t)
            f_fake = critics.teacher_features(self.teacher, x_hat_t, t, text, self.blocks)
            f_real = critics.teacher_features(self.teacher, real_t, t, text, self.blocks)
        l_dsm = losses.dsm_loss(self.fake(x_hat_t, t, text), x_hat)
        l_disc = losses.gan_discriminator_loss(self.disc(f_fake), self.disc(f_real))
        return l_dsm + l_disc, {"dsm": l_dsm.detach(), "disc": l_disc.detach()}
