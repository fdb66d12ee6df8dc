"""KL warm-up (the "annealed KL"): beta rises linearly from 0 to 1, stepped once per optimiser step.

The objective during warm-up is E_q[log p(x | .)] + beta * (log p(latents) - log q(latents | x)),
implemented by ``poutine.scale(scale=beta)`` on the latent sites of model and guide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearWarmup:
    """beta(step) = min(1, start + (1 - start) * (step + 1) / warmup_steps); 1 without warm-up.

    The first optimiser step (step 0) already has beta = 1 / warmup_steps: Pyro's ``poutine.scale``
    needs a positive scale, and beta reaches 1 at the last warm-up step.
    """

    warmup_steps: int
    start: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"the warm-up start must lie in [0, 1] (got {self.start})")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0 or step + 1 >= self.warmup_steps:
            return 1.0
        return self.start + (1.0 - self.start) * (step + 1) / self.warmup_steps
