"""`ProbsDropoutMatmul`: a mask-type example, ``dropout(probs) @ v``, for code that holds the probabilities itself."""

from __future__ import annotations

import torch

from .bernoulli_mask import BernoulliMask


class ProbsDropoutMatmul(BernoulliMask):
    """Mask type: ``out = dropout(probs) @ v`` with the element-wise dropout mask on probs.

    A mask-type example (docs/mask-types.md) for code that holds the probabilities itself;
    `packed_attention` does not use it (it recomputes the attention core and keeps no probs).

    Inputs ``(probs (..., Sq, Sk), v (..., Sk, D))``; saves probs and v (probs is also the
    softmax's saved output, so it is stored once); the dropped probs are never kept.
    """

    def __init__(self, p: float) -> None:
        super().__init__(p)

    def apply(self, mask: torch.Tensor, probs: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        (v,) = others
        return torch.matmul(super().apply(mask, probs), v)

    def save(self, probs: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (probs, *others)

    def grad(
        self, mask: torch.Tensor, grad_out: torch.Tensor, *saved: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        probs, v = saved
        noise = self.noise(mask, probs)
        grad_v = torch.matmul((probs * noise).transpose(-2, -1), grad_out)
        return torch.matmul(grad_out, v.transpose(-2, -1)).mul_(noise), grad_v
