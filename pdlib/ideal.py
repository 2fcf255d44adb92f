"""The ideal denoiser of a finite data set: the exact E[x0 | x0 + σε = x] under a uniform prior on its points.

For data {x_n}, the posterior over n is softmax_n(−‖x − x_n‖²/(2σ²)) and the ideal x0-prediction
is the posterior-weighted average of the data (Karras et al. 2022, eq. 57; the "blurry optimum"
of Luhman & Luhman 2022). Dropping the n-independent ‖x‖² the logits are (⟨x, x_n⟩ − ‖x_n‖²/2)/σ².
The log-sum-exp is streamed over chunks of the data in float64, so 60k images fit in bounded memory.
"""

from __future__ import annotations

import torch
from torch import nn

from pdlib.precond import sigma_batch

__all__ = ["ideal_denoiser", "ideal_posterior_weights", "IdealDenoiser"]

# σ² is floored here: below it every softmax is already a hard arg-max in float64, and the floor
# keeps the logits finite at σ = 0 (exact ties are then averaged, which is the correct limit).
_SIGMA2_MIN = 1e-200


def _prepare(data: torch.Tensor, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(data, torch.Tensor) or data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data has shape {tuple(getattr(data, 'shape', ()))}; allowed: a tensor "
                         f"[N, ...] with N >= 1")
    if not isinstance(x, torch.Tensor) or x.ndim != data.ndim or x.shape[1:] != data.shape[1:]:
        raise ValueError(f"x has shape {tuple(getattr(x, 'shape', ()))}; allowed: [B, "
                         f"{', '.join(map(str, data.shape[1:]))}] (the shape of one data point)")
    B = x.shape[0]
    s = sigma_batch(sigma, B, x.device)                                    # (B,) float64; σ = ∞ allowed
    inv_var = 1 / (s ** 2).clamp(min=_SIGMA2_MIN)                          # (B,) 1/σ², 0 at σ = ∞
    return x.reshape(B, -1).to(torch.float64), inv_var, s


def _logits(xf: torch.Tensor, chunk: torch.Tensor, inv_var: torch.Tensor) -> torch.Tensor:
    c = chunk.reshape(chunk.shape[0], -1).to(device=xf.device, dtype=torch.float64)   # (n, D)
    g = xf @ c.T - 0.5 * (c * c).sum(dim=1)                               # (B, n) = −½‖x−x_n‖² + const
    return g * inv_var[:, None], c


@torch.no_grad()
def ideal_denoiser(data: torch.Tensor, x: torch.Tensor, sigma, chunk_size: int = 4096) -> torch.Tensor:
    """E[x0 | x] = Σ_n softmax_n(−‖x − x_n‖²/(2σ²))·x_n, streamed over data chunks; σ float or [B]."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; allowed: an integer >= 1")
    xf, inv_var, _ = _prepare(data, x, sigma)
    B = xf.shape[0]
    m = torch.full((B,), -torch.inf, dtype=torch.float64, device=xf.device)   # running max logit
    z = torch.zeros(B, dtype=torch.float64, device=xf.device)                 # Σ exp(l − m)
    acc = torch.zeros_like(xf)                                                 # Σ exp(l − m)·x_n
    for start in range(0, data.shape[0], chunk_size):
        l, c = _logits(xf, data[start:start + chunk_size], inv_var)           # (B, n), (n, D)
        m_new = torch.maximum(m, l.max(dim=1).values)
        rescale = (m - m_new).exp()                                            # 0 on the first chunk
        w = (l - m_new[:, None]).exp()                                         # (B, n)
        z = z * rescale + w.sum(dim=1)
        acc = acc * rescale[:, None] + w @ c
        m = m_new
    return (acc / z[:, None]).reshape(x.shape).to(x.dtype)


@torch.no_grad()
def ideal_posterior_weights(data: torch.Tensor, x: torch.Tensor, sigma) -> torch.Tensor:
    """p(n | x) = softmax_n(−‖x − x_n‖²/(2σ²)) as a float64 [B, N] matrix (small data sets only)."""
    xf, inv_var, _ = _prepare(data, x, sigma)
    l, _ = _logits(xf, data, inv_var)
    return torch.softmax(l, dim=1)


class IdealDenoiser(nn.Module):
    """`ideal_denoiser` as a denoiser D(x, σ, **cond) for the samplers (conditioning is ignored)."""

    def __init__(self,
        data: torch.Tensor,             # the training set [N, C, H, W]; the prior is uniform on it
        chunk_size: int = 4096,         # data points per streamed chunk (memory ∝ B·chunk_size)
    ):
        super().__init__()
        self.register_buffer("data", data, persistent=False)
        self.chunk_size = chunk_size

    def forward(self, x, sigma, **cond):
        return ideal_denoiser(self.data, x, sigma, self.chunk_size)
