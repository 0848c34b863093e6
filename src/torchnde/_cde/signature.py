r"""Truncated signatures and log-signatures of piecewise-linear paths, in plain PyTorch.

The signature of a path $X: [0, T] \to \mathbb{R}^d$ truncated at depth $N$ is the
collection of iterated integrals $S^{i_1\ldots i_k} = \int_{0<t_1<\cdots<t_k<T}
dX^{i_1}_{t_1}\cdots dX^{i_k}_{t_k}$, $k \le N$ (Lyons, *Differential equations driven by
rough signals*, 1998). For one linear segment with increment $\Delta$ it is the tensor
exponential $\exp(\Delta) = \sum_k \Delta^{\otimes k}/k!$, and Chen's identity
$S(X * Y) = S(X) \otimes S(Y)$ gives any piecewise-linear path. Here the per-segment
exponentials are combined by a balanced tree of products (``log2(length)`` sequential
rounds, every round vectorised over segments and batch), and the signature of every prefix
(``stream=True``) by a Hillis–Steele parallel scan. The log-signature is
$\log S = \sum_{n \ge 1} (-1)^{n+1} (S - 1)^{\otimes n} / n$ in Lyndon coordinates
(Reizenstein & Graham 2018, *The iisignature library*; Kidger & Lyons 2021, *Signatory*).

Layout: level $k$ is flattened with the first letter most significant, levels concatenated
(Signatory's layout, without the scalar 1).
"""

from __future__ import annotations

import torch

from ._checks import describe
from .lyndon import brackets_inverse, lyndon_words, word_indices

__all__ = ["signature", "logsignature", "signature_to_logsignature"]

Levels = list[torch.Tensor]


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.unsqueeze(-1) * b.unsqueeze(-2)).flatten(-2)


def _exp(delta: torch.Tensor, depth: int) -> Levels:
    levels = [delta]
    for k in range(2, depth + 1):
        levels.append(_outer(levels[-1], delta / k))
    return levels


def _mul(a: Levels, b: Levels) -> Levels:
    """Chen product of two group-like elements (implicit scalar 1 at level 0)."""
    out = []
    for k in range(1, len(a) + 1):
        c = a[k - 1] + b[k - 1]
        for i in range(1, k):
            c = c + _outer(a[i - 1], b[k - i - 1])
        out.append(c)
    return out


def _mul_nounit(a: Levels, b: Levels, lowest_a: int) -> Levels:
    """Product of elements with zero scalar part; ``a`` vanishes below level ``lowest_a``."""
    depth = len(a)
    out = [torch.zeros_like(x) for x in a]
    for k in range(lowest_a + 1, depth + 1):
        c = out[k - 1]
        for i in range(lowest_a, k):
            c = c + _outer(a[i - 1], b[k - i - 1])
        out[k - 1] = c
    return out


def _reduce(levels: Levels) -> Levels:
    """Product over dimension -2 (segments, in order) by a balanced tree."""
    while levels[0].shape[-2] > 1:
        n = levels[0].shape[-2]
        even = n - n % 2
        left = [x[..., 0:even:2, :] for x in levels]
        right = [x[..., 1:even:2, :] for x in levels]
        prod = _mul(left, right)
        if n % 2:
            prod = [torch.cat([p, x[..., -1:, :]], dim=-2) for p, x in zip(prod, levels)]
        levels = prod
    return [x.squeeze(-2) for x in levels]


def _scan(levels: Levels) -> Levels:
    """Every prefix product over dimension -2 (Hillis–Steele)."""
    n = levels[0].shape[-2]
    d = 1
    while d < n:
        prod = _mul([x[..., :-d, :] for x in levels], [x[..., d:, :] for x in levels])
        levels = [torch.cat([x[..., :d, :], p], dim=-2) for x, p in zip(levels, prod)]
        d *= 2
    return levels


def _check(who: str, path: object, depth: object, basepoint: object) -> torch.Tensor:
    if not isinstance(path, torch.Tensor) or not torch.is_floating_point(path) or path.ndim < 2:
        raise TypeError(
            f"{who}: `path` must be a floating-point tensor of shape (..., length, channels), "
            f"got {describe(path)}."
        )
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"{who}: `depth` must be a positive int, got {depth!r}.")
    if basepoint is not False and basepoint is not None:
        if basepoint is True:
            base = torch.zeros_like(path[..., :1, :])
        elif isinstance(basepoint, torch.Tensor):
            base = basepoint.to(path.dtype).expand(path.shape[:-2] + path.shape[-1:])
            base = base.unsqueeze(-2)
        else:
            raise TypeError(
                f"{who}: `basepoint` must be a bool or a tensor of shape (..., channels), got "
                f"{describe(basepoint)}."
            )
        path = torch.cat([base, path], dim=-2)
    if path.shape[-2] < 2:
        raise ValueError(
            f"{who}: `path` needs at least 2 points along dimension -2 (or basepoint=True), "
            f"got shape {tuple(path.shape)}."
        )
    return path


def _signature_levels(path: torch.Tensor, depth: int, stream: bool) -> Levels:
    levels = _exp(path[..., 1:, :] - path[..., :-1, :], depth)
    return _scan(levels) if stream else _reduce(levels)


def signature(
    path: torch.Tensor,
    depth: int,
    *,
    stream: bool = False,
    basepoint: bool | torch.Tensor = False,
) -> torch.Tensor:
    r"""The signature of the piecewise-linear path through the points ``path``, truncated at
    ``depth``.

    Args:
        path: shape ``(..., length, channels)``.
        depth: the truncation depth $N \ge 1$.
        stream: return the signature of every prefix ``path[..., :j + 1, :]``, ``j = 1, ...,
            length - 1``.
        basepoint: ``True`` prepends the origin, a tensor ``(..., channels)`` prepends that
            point.

    Returns:
        Shape ``(..., C + C² + ... + C^N)`` (``(..., length - 1, ...)`` with ``stream``);
        ``signature_channels(C, N)`` entries.

    Example:
        >>> signature(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), 2)   # exp of the increment
        tensor([1., 2., 0.5, 1., 1., 2.])
    """
    path = _check("signature", path, depth, basepoint)
    return torch.cat(_signature_levels(path, depth, stream), dim=-1)


def _split(sig: torch.Tensor, channels: int, depth: int) -> Levels:
    sizes = [channels**k for k in range(1, depth + 1)]
    return list(torch.split(sig, sizes, dim=-1))


def _log(levels: Levels) -> Levels:
    depth = len(levels)
    out = list(levels)
    power = levels
    for n in range(2, depth + 1):
        power = _mul_nounit(power, levels, n - 1)
        sign = (-1) ** (n + 1) / n
        out = [o + sign * p for o, p in zip(out, power)]
    return out


def _project(log_levels: Levels, channels: int, depth: int, mode: str) -> torch.Tensor:
    if mode == "expand":
        return torch.cat(log_levels, dim=-1)
    flat = torch.cat(log_levels, dim=-1)
    idx = torch.tensor(word_indices(channels, depth), device=flat.device)
    words = flat.index_select(-1, idx)
    if mode == "words":
        return words
    # brackets: solve the unitriangular system level by level
    counts = [0] * depth
    for w in lyndon_words(channels, depth):
        counts[len(w) - 1] += 1
    parts = torch.split(words, counts, dim=-1)
    inverses = brackets_inverse(channels, depth)
    out = [p @ m.to(dtype=p.dtype, device=p.device) for p, m in zip(parts, inverses)]
    return torch.cat(out, dim=-1)


def _check_mode(who: str, mode: object) -> str:
    if mode not in ("words", "brackets", "expand"):
        raise ValueError(f"{who}: `mode` must be 'words', 'brackets' or 'expand', got {mode!r}.")
    return str(mode)


def logsignature(
    path: torch.Tensor,
    depth: int,
    *,
    stream: bool = False,
    basepoint: bool | torch.Tensor = False,
    mode: str = "words",
) -> torch.Tensor:
    r"""The log-signature of the piecewise-linear path through ``path``, truncated at
    ``depth``, in Lyndon coordinates.

    Args:
        path, depth, stream, basepoint: as for :func:`signature`.
        mode: ``"words"`` (coefficients of the Lyndon words in the tensor expansion,
            Signatory's default), ``"brackets"`` (coefficients in the Lyndon bracket basis)
            or ``"expand"`` (the full tensor, ``signature_channels`` entries).

    Returns:
        Shape ``(..., logsignature_channels(C, N))`` (``(..., length - 1, ...)`` with
        ``stream``), ordered by word length, then lexicographically.
    """
    mode = _check_mode("logsignature", mode)
    path = _check("logsignature", path, depth, basepoint)
    levels = _signature_levels(path, depth, stream)
    return _project(_log(levels), path.shape[-1], depth, mode)


def signature_to_logsignature(
    sig: torch.Tensor, channels: int, depth: int, *, mode: str = "words"
) -> torch.Tensor:
    """The log-signature from a signature of :func:`signature` (same ``channels``, ``depth``)."""
    mode = _check_mode("signature_to_logsignature", mode)
    size = sum(channels**k for k in range(1, depth + 1))
    if not isinstance(sig, torch.Tensor) or sig.shape[-1:] != (size,):
        raise ValueError(
            f"signature_to_logsignature: `sig` must have last dimension {size} (channels="
            f"{channels}, depth={depth}), got {describe(sig)}."
        )
    return _project(_log(_split(sig, channels, depth)), channels, depth, mode)
