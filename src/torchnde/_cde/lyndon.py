r"""Lyndon words, the Witt formula and the Lyndon bracket basis of the free Lie algebra.

The log-signature lies in the free Lie algebra, whose dimension up to depth $N$ over $d$
letters is the number of Lyndon words of length at most $N$ (Witt's formula,
$\sum_{k\le N} \frac1k \sum_{m | k} \mu(m)\, d^{k/m}$). Coordinates: the coefficients of the
Lyndon words in the tensor expansion (``mode="words"``, Signatory's default) or the
coefficients in the Lyndon bracket basis $P_w = [P_u, P_v]$ with $w = uv$ the standard
factorisation (``mode="brackets"``). The two are related by a unitriangular matrix
(Reutenauer, *Free Lie Algebras*, 1993, Thm. 5.1: $P_w = w + $ larger words).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["lyndon_words", "logsignature_channels", "signature_channels", "word_indices"]


def _check(channels: int, depth: int, who: str) -> None:
    for name, v in (("channels", channels), ("depth", depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{who}: `{name}` must be a positive int, got {v!r}.")


@functools.lru_cache(maxsize=64)
def lyndon_words(channels: int, depth: int) -> tuple[tuple[int, ...], ...]:
    """All Lyndon words over ``range(channels)`` of length at most ``depth``, ordered by
    length, then lexicographically (Duval's algorithm)."""
    _check(channels, depth, "lyndon_words")
    words = []
    w = [-1]
    while w:
        w[-1] += 1
        words.append(tuple(w))
        m = len(w)
        while len(w) < depth:
            w.append(w[-m])
        while w and w[-1] == channels - 1:
            w.pop()
    return tuple(sorted(words, key=lambda u: (len(u), u)))


def _mobius(n: int) -> int:
    out, p = 1, 2
    while p * p <= n:
        if n % p == 0:
            n //= p
            if n % p == 0:
                return 0
            out = -out
        p += 1
    return -out if n > 1 else out


def logsignature_channels(channels: int, depth: int) -> int:
    """The dimension of the log-signature (Witt's formula): the number of Lyndon words of
    length at most ``depth`` over ``channels`` letters."""
    _check(channels, depth, "logsignature_channels")
    total = 0
    for k in range(1, depth + 1):
        total += sum(_mobius(m) * channels ** (k // m) for m in range(1, k + 1) if k % m == 0) // k
    return total


def signature_channels(channels: int, depth: int) -> int:
    """The dimension of the truncated signature: ``channels + channels² + ... +
    channels^depth``."""
    _check(channels, depth, "signature_channels")
    return sum(channels**k for k in range(1, depth + 1))


def _flat(word: tuple[int, ...], channels: int) -> int:
    i = 0
    for letter in word:
        i = i * channels + letter
    return i


@functools.lru_cache(maxsize=64)
def word_indices(channels: int, depth: int) -> tuple[int, ...]:
    """Positions of the Lyndon words in the concatenated signature levels."""
    offsets = [0]
    for k in range(1, depth + 1):
        offsets.append(offsets[-1] + channels**k)
    return tuple(offsets[len(w) - 1] + _flat(w, channels) for w in lyndon_words(channels, depth))


def _standard_factorisation(w: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``w = uv`` with ``v`` the longest proper suffix that is a Lyndon word."""
    for i in range(1, len(w)):
        v = w[i:]
        if all(v < v[j:] for j in range(1, len(v))):
            return w[:i], v
    raise ValueError(f"{w} has no proper Lyndon suffix")  # a letter; never called on one


@functools.lru_cache(maxsize=32)
def brackets_inverse(channels: int, depth: int) -> tuple[torch.Tensor, ...]:
    """Per level ``k``: the inverse of the (unitriangular) matrix whose row ``w`` holds the
    Lyndon-word coefficients of the bracket ``P_w``; float64 on the CPU."""
    words = lyndon_words(channels, depth)
    expansion: dict[tuple[int, ...], torch.Tensor] = {}
    for w in words:
        if len(w) == 1:
            e = torch.zeros(channels, dtype=torch.float64)
            e[w[0]] = 1
            expansion[w] = e
        else:
            u, v = _standard_factorisation(w)
            pu, pv = expansion[u], expansion[v]
            expansion[w] = torch.outer(pu, pv).reshape(-1) - torch.outer(pv, pu).reshape(-1)
    out = []
    for k in range(1, depth + 1):
        level = [w for w in words if len(w) == k]
        cols = torch.tensor([_flat(w, channels) for w in level])
        m = torch.stack([expansion[w][cols] for w in level])
        out.append(torch.linalg.inv(m))
    return tuple(out)
