"""Neural-operator benchmarks: FNO1d / FNO2d forward + backward against a direct
reimplementation (the spectral product written per mode, as a loop of matrix products), and
against the ``neuraloperator`` package's FNO at the same width and modes where it is installed
(``pip install neuraloperator``; optional, not in the bench extra: see the README); T1 beside
FNO2d. Timings run round-robin in one process (``time_interleaved``); outputs are checked to
agree before timing.

    PYTHONPATH=src .venv/bin/python benchmarks/operators.py          # about a minute, 1 thread
    PYTHONPATH=src .venv/bin/python benchmarks/operators.py --quick  # a few seconds
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
from _common import (
    base_parser,
    machine_info,
    markdown_table,
    set_threads,
    time_interleaved,
    write_json,
)

# isort: split
import torch
import torch.nn.functional as F

from torchnde.operators import T1, FNO1d, FNO2d


def _naive_spectral(layer: Any, v: torch.Tensor) -> torch.Tensor:
    """The spectral convolution of ``layer`` with one matrix product per kept mode."""
    if v.ndim == 3:
        n = v.shape[-1]
        x_ft = torch.fft.rfft(v)
        out = x_ft.new_zeros(v.shape[0], layer.out_channels, n // 2 + 1)
        for k in range(layer.modes):
            out[:, :, k] = x_ft[:, :, k] @ layer.complex_weight()[:, :, k]
        return torch.fft.irfft(out, n=n)
    n1, n2 = v.shape[-2:]
    w1, w2 = layer.complex_weights()
    x_ft = torch.fft.rfft2(v)
    out = x_ft.new_zeros(v.shape[0], layer.out_channels, n1, n2 // 2 + 1)
    for a in range(layer.modes1):
        for b in range(layer.modes2):
            out[:, :, a, b] = x_ft[:, :, a, b] @ w1[:, :, a, b]
            out[:, :, n1 - layer.modes1 + a, b] = (
                x_ft[:, :, n1 - layer.modes1 + a, b] @ w2[:, :, a, b]
            )
    return torch.fft.irfft2(out, s=(n1, n2))


def naive_forward(model: Any, x: torch.Tensor) -> torch.Tensor:
    """``model``'s forward pass (same weights) with the per-mode spectral products."""
    from torchnde.operators._grid import append_grid

    v = model.lift(append_grid(x, model.grid))
    p = model.padding
    if p:
        v = F.pad(v, (0, p) * model.ndim)
    for i, (k, w) in enumerate(zip(model.spectral, model.pointwise)):
        v = _naive_spectral(k, v) + w(v)
        if i < model.num_layers - 1:
            v = F.gelu(v)
    if p:
        v = v[..., :-p] if model.ndim == 1 else v[..., :-p, :-p]
    return model.proj2(F.gelu(model.proj1(v)))


def _neuralop(ndim: int, modes: tuple[int, ...], width: int) -> Any:
    try:
        from neuralop.models import FNO  # type: ignore[import-not-found]
    except ImportError:
        return None
    return FNO(n_modes=modes, hidden_channels=width, in_channels=1 + ndim, out_channels=1)


def _step(fn: Any, x: torch.Tensor, params: list[torch.Tensor]) -> Any:
    def run() -> None:
        out = fn(x)
        grads = torch.autograd.grad(out.square().mean(), params)
        del grads

    return run


def bench(rows: list[dict[str, Any]], case: dict[str, Any], target_s: float) -> None:
    torch.manual_seed(0)
    ndim, n, batch = case["ndim"], case["n"], case["batch"]
    if ndim == 1:
        model = FNO1d(1, 1, case["modes"], case["width"], 4)
        modes: tuple[int, ...] = (case["modes"],)
    else:
        model = FNO2d(1, 1, case["modes"], case["width"], 4)
        modes = (case["modes"], case["modes"])
    x = torch.randn(batch, 1, *((n,) * ndim))
    params = list(model.parameters())
    with torch.no_grad():
        diff = float((model(x) - naive_forward(model, x)).abs().max())
    fns = {
        "torchnde": _step(model, x, params),
        "naive": _step(lambda z: naive_forward(model, z), x, params),
    }
    if ndim == 2:
        t1 = T1(1, 1, case["modes"], case["width"], 4, resolution=n)
        fns["t1"] = _step(t1, x, list(t1.parameters()))
    peer = _neuralop(ndim, modes, case["width"])
    if peer is not None:
        from torchnde.operators._grid import append_grid

        xg = append_grid(x, "closed")
        fns["neuralop"] = _step(peer, xg, list(peer.parameters()))
    for fn in fns.values():
        fn()  # warm-up
    res = time_interleaved(fns, target_s=target_s)
    row: dict[str, Any] = {
        "case": f"FNO{ndim}d n={n}{'^2' if ndim == 2 else ''} b={batch} w={case['width']} "
        f"m={case['modes']}",
        "max_abs_diff": diff,
    }
    for k, v in res.items():
        row[f"{k}_s"] = v["median"]
    row["naive_over_torchnde"] = row["naive_s"] / row["torchnde_s"]
    if "neuralop_s" in row:
        row["neuralop_over_torchnde"] = row["neuralop_s"] / row["torchnde_s"]
    if "t1_s" in row:
        row["fno_over_t1"] = row["torchnde_s"] / row["t1_s"]
    rows.append(row)


def main() -> None:
    p = base_parser("neural-operator benchmarks", "torchnde,naive,neuralop")
    p.add_argument("--target-s", type=float, default=0.5)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    set_threads(a.threads)
    cases = [
        {"ndim": 1, "n": 256, "batch": 20, "width": 64, "modes": 16},
        {"ndim": 1, "n": 1024, "batch": 20, "width": 64, "modes": 16},
        {"ndim": 2, "n": 32, "batch": 20, "width": 24, "modes": 8},
        {"ndim": 2, "n": 64, "batch": 20, "width": 32, "modes": 12},
    ]
    if a.quick:
        cases = [cases[0], cases[2]]
        a.target_s = min(a.target_s, 0.1)
    rows: list[dict[str, Any]] = []
    for case in cases:
        bench(rows, case, a.target_s)
    try:
        import neuralop  # type: ignore[import-not-found]  # noqa: F401

        note = "neuraloperator installed"
    except ImportError:
        note = "neuraloperator not installed: compared against the direct reimplementation only"
    out = write_json("operators", {"machine": machine_info(), "rows": rows, "note": note}, a.out)
    cols = [("case", "case", "s"), ("torchnde_s", "torchnde ms", "ms"),
            ("naive_s", "naive ms", "ms"),
            ("naive_over_torchnde", "naive/torchnde", "x"), ("neuralop_s", "neuralop ms", "ms"),
            ("t1_s", "T1 ms", "ms"), ("fno_over_t1", "FNO/T1", "x"),
            ("max_abs_diff", "max |diff|", "e")]  # fmt: skip
    print(markdown_table(rows, cols))
    print(note)
    print(out)


if __name__ == "__main__":
    main()
