"""Truncated signatures and log-signatures, tested against their algebra.

Known values (a segment's signature is the tensor exponential of its increment), Chen's
identity, the shuffle product, the Baker–Campbell–Hausdorff formula for two segments, the
Witt dimension formula, and gradients by finite differences. (Signatory, the reference
implementation, does not install on PyTorch 2, so there is no library to compare against.)
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import torchnde as tn
from torchnde._cde.signature import _mul, _split

F64 = torch.float64


def _walk(batch: int, n: int, channels: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, channels, generator=g, dtype=F64).cumsum(-2) * 0.5


def _entry(sig: torch.Tensor, word: tuple[int, ...], channels: int) -> torch.Tensor:
    """The coefficient of ``word`` in a concatenated signature."""
    offset = sum(channels**k for k in range(1, len(word)))
    i = 0
    for letter in word:
        i = i * channels + letter
    return sig[..., offset + i]


def test_one_segment_signature_is_the_exponential_of_its_increment():
    path = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, 1.0]], dtype=F64)
    delta = path[1] - path[0]
    sig = tn.signature(path, 4)
    for k in range(1, 5):
        for word in itertools.product(range(3), repeat=k):
            want = math.prod(float(delta[i]) for i in word) / math.factorial(k)
            assert float(_entry(sig, word, 3)) == pytest.approx(want, abs=1e-14)


def test_collinear_path_has_the_signature_of_its_total_increment():
    base = torch.tensor([1.0, -2.0], dtype=F64)
    path = torch.stack([s * base for s in [0.0, 0.3, 1.1, 2.0]])
    torch.testing.assert_close(tn.signature(path, 3), tn.signature(path[[0, -1]], 3))
    log = tn.logsignature(path, 4)
    torch.testing.assert_close(log[:2], 2 * base)
    # round-off on signature terms of size up to 2^4/4! * 16
    torch.testing.assert_close(log[2:], torch.zeros_like(log[2:]), rtol=0, atol=1e-12)


def test_chens_identity():
    x = _walk(3, 9, 2)
    c, d = 2, 4
    whole = tn.signature(x, d)
    for k in (2, 5, 7):
        left = _split(tn.signature(x[:, : k + 1], d), c, d)
        right = _split(tn.signature(x[:, k:], d), c, d)
        torch.testing.assert_close(torch.cat(_mul(left, right), -1), whole)


def _shuffles(u: tuple[int, ...], v: tuple[int, ...]) -> list[tuple[int, ...]]:
    if not u:
        return [v]
    if not v:
        return [u]
    return [(u[0],) + w for w in _shuffles(u[1:], v)] + [(v[0],) + w for w in _shuffles(u, v[1:])]


@pytest.mark.parametrize(
    "u, v", [((0,), (1,)), ((1,), (0, 2)), ((0, 1), (2, 0)), ((2,), (1, 1, 0))]
)
def test_shuffle_product_relation(u, v):
    x = _walk(2, 7, 3, 1)
    sig = tn.signature(x, 4)
    lhs = _entry(sig, u, 3) * _entry(sig, v, 3)
    rhs = sum(_entry(sig, w, 3) for w in _shuffles(u, v))
    torch.testing.assert_close(lhs, rhs)


def test_stream_gives_the_signature_of_every_prefix():
    x = _walk(2, 11, 2, 2)
    stream = tn.signature(x, 3, stream=True)
    assert stream.shape == (2, 10, tn.signature_channels(2, 3))
    for j in range(1, 11):
        torch.testing.assert_close(stream[:, j - 1], tn.signature(x[:, : j + 1], 3))
    log_stream = tn.logsignature(x, 3, stream=True)
    torch.testing.assert_close(log_stream[:, 4], tn.logsignature(x[:, :6], 3))


def test_basepoint_prepends_the_origin():
    x = _walk(2, 5, 2, 3) + 1.0
    zero = torch.zeros(2, 1, 2, dtype=F64)
    torch.testing.assert_close(
        tn.signature(x, 3, basepoint=True), tn.signature(torch.cat([zero, x], 1), 3)
    )


@pytest.mark.parametrize("channels, depth", [(2, 1), (2, 4), (3, 3), (4, 3), (2, 6), (5, 2)])
def test_logsignature_dimension_is_the_number_of_lyndon_words(channels, depth):
    words = tn.lyndon_words(channels, depth)
    # Witt's formula, written out independently: sum_k (1/k) sum_{m | k} mu(m) c^(k/m)
    mobius = {1: 1, 2: -1, 3: -1, 4: 0, 5: -1, 6: 1}
    witt = sum(
        sum(mobius[m] * channels ** (k // m) for m in range(1, k + 1) if k % m == 0) // k
        for k in range(1, depth + 1)
    )
    assert len(words) == witt == tn.logsignature_channels(channels, depth)
    for w in words:  # each is strictly smaller than its proper rotations
        assert all(w < w[i:] + w[:i] for i in range(1, len(w)))
    x = _walk(1, 4, channels)
    assert tn.logsignature(x, depth).shape == (1, witt)


def _bracket(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a, b] = a⊗b - b⊗a for homogeneous tensors (flattened)."""
    return torch.outer(a, b).reshape(-1) - torch.outer(b, a).reshape(-1)


def test_two_segments_satisfy_baker_campbell_hausdorff():
    a = torch.tensor([0.7, -0.4, 0.2], dtype=F64)
    b = torch.tensor([-0.3, 0.9, 0.5], dtype=F64)
    path = torch.stack([torch.zeros(3, dtype=F64), a, a + b])
    log = tn.logsignature(path, 3, mode="expand")
    lv = _split(log, 3, 3)
    # log(e^a e^b) = a + b + [a,b]/2 + ([a,[a,b]] + [b,[b,a]])/12 + O(4)
    torch.testing.assert_close(lv[0], a + b)
    torch.testing.assert_close(lv[1], _bracket(a, b) / 2)
    want3 = (_bracket(a, _bracket(a, b)) + _bracket(b, _bracket(b, a))) / 12
    torch.testing.assert_close(lv[2], want3)
    # Lyndon bracket coordinates at depth 2: a+b, then (a_i b_j - a_j b_i)/2 on [e_i, e_j]
    br = tn.logsignature(path, 2, mode="brackets")
    torch.testing.assert_close(br[:3], a + b)
    want = [(a[i] * b[j] - a[j] * b[i]) / 2 for i, j in [(0, 1), (0, 2), (1, 2)]]
    torch.testing.assert_close(br[3:], torch.stack(want))
    # word coordinates are the Lyndon entries of the expanded tensor
    words = tn.logsignature(path, 3)
    expanded = torch.cat(lv)
    for i, w in enumerate(tn.lyndon_words(3, 3)):
        torch.testing.assert_close(words[i], _entry(expanded, w, 3))


def test_signature_to_logsignature_matches_logsignature():
    x = _walk(2, 6, 2, 4)
    sig = tn.signature(x, 4)
    torch.testing.assert_close(tn.signature_to_logsignature(sig, 2, 4), tn.logsignature(x, 4))


def test_signature_and_logsignature_are_differentiable():
    x = _walk(1, 4, 2, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: tn.signature(p, 3), (x,))
    assert torch.autograd.gradcheck(lambda p: tn.logsignature(p, 3, mode="brackets"), (x,))


def test_logsig_windows_depth_one_gives_the_values_at_window_ends():
    t = torch.linspace(0, 9, 10, dtype=F64)
    x = _walk(2, 10, 2, 6)
    out = tn.logsig_windows(x, 1, 3.0, t)
    torch.testing.assert_close(out, x[:, [0, 3, 6, 9]])


def test_logsig_windows_are_cumulative_window_logsignatures():
    t = torch.linspace(0, 8, 9, dtype=F64)
    x = _walk(2, 9, 3, 7)
    out = tn.logsig_windows(x, 3, 2.5, t)  # windows [0,2.5],[2.5,5],[5,7.5],[7.5,8]
    assert out.shape == (2, 5, tn.logsignature_channels(3, 3))
    X = tn.LinearInterpolation(x, t)
    bounds = [0.0, 2.5, 5.0, 7.5, 8.0]
    for k in range(4):
        lo, hi = bounds[k], bounds[k + 1]
        inner = [float(s) for s in t if lo < float(s) < hi]
        pts = torch.stack([X.evaluate(torch.tensor(s, dtype=F64)) for s in [lo, *inner, hi]], -2)
        torch.testing.assert_close(out[:, k + 1] - out[:, k], tn.logsignature(pts, 3))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`depth` must be a positive int"):
        tn.signature(torch.zeros(3, 2), 0)
    with pytest.raises(ValueError, match="at least 2 points"):
        tn.signature(torch.zeros(1, 2), 2)
    with pytest.raises(ValueError, match="`mode`"):
        tn.logsignature(torch.zeros(3, 2), 2, mode="lyndon")
    with pytest.raises(ValueError, match="`window_length` must be positive"):
        tn.logsig_windows(torch.zeros(4, 2), 2, 0.0)
