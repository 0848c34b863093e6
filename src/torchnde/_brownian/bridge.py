r"""Brownian-bridge algebra shared by the Brownian motions: splitting an interval's increment
(and space-time Lévy area) at an interior point, joining two adjacent intervals, the
Davie / Foster approximations of the full Lévy area, and seed mixing.

Notation for an interval $[a, b]$ of length $h$: $W = W_b - W_a$ and the space-time Lévy area

$$H = \frac{1}{h} \int_a^b \Big(W_u - W_a - \frac{u - a}{h} W\Big)\, du,$$

so that $H \sim N(0, h/12)$ independently of $W$ (Foster 2020, *Numerical approximations for
stochastic differential equations*, PhD thesis, Oxford, ch. 3).
"""

from __future__ import annotations

import math
import struct

import torch

_MASK64 = (1 << 64) - 1


def mix(*values: int) -> int:
    """Hash integers into one 64-bit seed (splitmix64 steps, chained).

    Seeds of tree nodes are derived from their position, so a node's sample never depends on
    how or when the node was reached.
    """
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x


def float_bits(t: float) -> int:
    """The 64 bits of a float, to mix a time into a seed."""
    return struct.unpack("<q", struct.pack("<d", t))[0]


def split(
    W: torch.Tensor, H: torch.Tensor | None, z: torch.Tensor, h1: float, h2: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    r"""Sample the two halves of an interval given its increment (and space-time area).

    The interval $[a, b]$ is cut at $m$, $h_1 = m - a$, $h_2 = b - m$, $h = h_1 + h_2$.

    Without Lévy area (``H is None``), ``z`` is standard normal of the shape of ``W`` and the
    Brownian bridge gives $W_1 = \frac{h_1}{h} W + \sqrt{h_1 h_2 / h}\, z$, $W_2 = W - W_1$.

    With space-time Lévy area, ``z`` has shape ``(2, *W.shape)`` and $(W_1, H_1)$ is drawn from
    its Gaussian law conditional on $(W, H)$, the four quantities $W_1, H_1, W_2, H_2$ being
    independent a priori and tied by $W = W_1 + W_2$ and (see :func:`join`)
    $H = (h_1 H_1 + h_2 H_2)/h + (h_2 W_1 - h_1 W_2)/(2h)$. Gaussian conditioning gives, with
    $q = h_1^2 - h_1 h_2 + h_2^2$,

    $$W_1 = \tfrac{h_1}{h} W + \tfrac{6 h_1 h_2}{h^2} H + \sqrt{\tfrac{h_1 h_2 q}{h^3}}\, z_1,$$
    $$H_1 = \tfrac{h_1^2}{h^2} H - \sqrt{\tfrac{h_1^5 h_2}{4 h^3 q}}\, z_1
            + \sqrt{\tfrac{h_1 h_2^3}{12 h q}}\, z_2,$$
    $$H_2 = \tfrac{h_2^2}{h^2} H - \sqrt{\tfrac{h_1 h_2^5}{4 h^3 q}}\, z_1
            - \sqrt{\tfrac{h_1^3 h_2}{12 h q}}\, z_2,$$

    ($H_2$ written directly in the noises rather than solved from the join relation, which
    would divide by $h_2$ and lose precision for lopsided cuts.) The same law is used by
    torchsde's ``BrownianInterval``.

    Returns:
        ``(W1, H1, W2, H2)`` (``H1, H2`` are ``None`` without Lévy area).
    """
    h = h1 + h2
    if H is None:
        W1 = torch.add(W.mul(h1 / h), z, alpha=math.sqrt(h1 * h2 / h))
        return W1, None, W - W1, None
    z1, z2 = z[0], z[1]
    q = h1 * h1 - h1 * h2 + h2 * h2
    h3 = h * h * h
    W1 = W.mul(h1 / h).add_(H, alpha=6.0 * h1 * h2 / (h * h))
    W1.add_(z1, alpha=math.sqrt(h1 * h2 * q / h3))
    H1 = H.mul((h1 / h) ** 2).add_(z1, alpha=-math.sqrt(h1**5 * h2 / (4.0 * h3 * q)))
    H1.add_(z2, alpha=math.sqrt(h1 * h2**3 / (12.0 * h * q)))
    H2 = H.mul((h2 / h) ** 2).add_(z1, alpha=-math.sqrt(h1 * h2**5 / (4.0 * h3 * q)))
    H2.add_(z2, alpha=-math.sqrt(h1**3 * h2 / (12.0 * h * q)))
    return W1, H1, W - W1, H2


def join(
    W1: torch.Tensor,
    H1: torch.Tensor | None,
    h1: float,
    W2: torch.Tensor,
    H2: torch.Tensor | None,
    h2: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Increment and space-time Lévy area of the union of two adjacent intervals.

    From $\int_a^b W_{a,u}\, du = h(W/2 + H)$ applied to each piece:
    $W = W_1 + W_2$ and $H = (h_1 H_1 + h_2 H_2)/h + (h_2 W_1 - h_1 W_2)/(2h)$.
    """
    W = W1 + W2
    if H1 is None or H2 is None:
        return W, None
    h = h1 + h2
    H = H1.mul(h1 / h).add_(H2, alpha=h2 / h)
    H.add_(W1, alpha=h2 / (2.0 * h)).add_(W2, alpha=-h1 / (2.0 * h))
    return W, H


def full_area(
    W: torch.Tensor, H: torch.Tensor, h: float, kind: str, noise: torch.Tensor
) -> torch.Tensor:
    r"""Approximate the Lévy area $A_{ij} = \tfrac12 \int_a^b (W^i_{a,u}\, dW^j_u - W^j_{a,u}\,
    dW^i_u)$ from $(W, H)$ over the last dimension of ``W``.

    Both approximations use the exact conditional mean $E[A_{ij} \mid W, H] = H_i W_j - W_i H_j$
    and add independent antisymmetric Gaussian noise $\lambda_{ij}$ ($i < j$):

    - ``"davie"`` (Davie 2014, *KMT theory applied to approximations of SDE*):
      $\operatorname{Var} \lambda_{ij} = h^2/12$, so that $\operatorname{Var} A_{ij} = h^2/4$
      exactly.
    - ``"foster"`` (Foster 2020, thesis, §5.3): $\operatorname{Var} \lambda_{ij} = h^2/20 +
      \tfrac{h}{5}(H_i^2 + H_j^2)$, the conditional variance given $(W, H)$ matched in its
      dependence on $H$; its mean over $H$ is again $h^2/12$.

    Args:
        noise: standard normal of shape ``W.shape + W.shape[-1:]`` (only its strict upper
            triangle is used).

    Returns:
        ``A`` of shape ``W.shape + W.shape[-1:]``, antisymmetric in its last two dimensions.
    """
    A = H.unsqueeze(-1) * W.unsqueeze(-2) - W.unsqueeze(-1) * H.unsqueeze(-2)
    d = W.shape[-1]
    upper = torch.triu(noise, diagonal=1)
    lam = upper - upper.transpose(-1, -2)  # antisymmetric, unit variance off the diagonal
    if kind == "davie":
        std: torch.Tensor | float = h / math.sqrt(12.0)
    else:
        H2 = H * H
        std = (h * h / 20.0 + (h / 5.0) * (H2.unsqueeze(-1) + H2.unsqueeze(-2))).sqrt()
    if d == 1:
        return torch.zeros_like(A)
    return A + std * lam
