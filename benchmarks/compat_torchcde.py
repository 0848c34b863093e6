"""torchcde's example scripts, original against ``torchnde.compat.torchcde``, side by side.

The same model code with only the module changed, each case timed round-robin in one
process (one thread):

* ``classification``: torchcde's README example (``example/time_series_classification.py``):
  clockwise against anticlockwise spirals, 128 series of length 100 with channels (t, x, y),
  Hermite cubic coefficients with backward differences, a neural CDE with hidden size 8
  and a 128-wide MLP vector field, ``cdeint(X, func, z0, X.interval)`` with its defaults
  (dopri5, rtol 1e-4, atol 1e-6, ``adjoint=True``), binary cross-entropy: one training
  step (forward + backward) on the whole batch.
* ``irregular``: ``example/irregular_data.py``: three series of two channels observed at
  different random times, merged on one time axis with NaNs for the missing values,
  observation counts as channels, padded by repeating the last row; Hermite coefficients
  (with missing values), ``CubicSpline``, ``cdeint`` forward (no training), hidden 4.
* ``logsig``: ``example/logsignature_example.py``'s model: the spirals at 5000 time points
  summarised by depth-2 log-signatures over windows of 50, ``linear_interpolation_coeffs``
  and ``LinearInterpolation`` of them, the README model on that path: one training step on
  one of the example's batches (32 series).
  The original needs Signatory for ``logsig_windows``, which does not install on PyTorch 2,
  so both modules get the same log-signature features (computed by the compat module);
  only the CDE part is timed.

Run: ``.venv/bin/python benchmarks/compat_torchcde.py [--quick] [--cases a,b]``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
import _common as C

# isort: split
import torch


def spirals(n: int = 128, length: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0.0, 4 * math.pi, length)
    start = torch.rand(n, generator=g) * 2 * math.pi
    x_pos = torch.cos(start.unsqueeze(1) + t.unsqueeze(0)) / (1 + 0.5 * t)
    x_pos[: n // 2] *= -1
    y_pos = torch.sin(start.unsqueeze(1) + t.unsqueeze(0)) / (1 + 0.5 * t)
    x = torch.stack([t.unsqueeze(0).repeat(n, 1), x_pos, y_pos], dim=2)
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    y = torch.zeros(n)
    y[: n // 2] = 1
    perm = torch.randperm(n, generator=g)
    return x[perm], y[perm]


def irregular_batch() -> torch.Tensor:
    """irregular_data.py's batch: (3, length, 5) with channels (t, xa, xb, counts a, b)."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for na, nb in ((7, 5), (9, 7), (8, 3)):
        ta, tb = (
            torch.rand(na, generator=g).sort().values,
            torch.rand(nb, generator=g).sort().values,
        )
        xa, xb = torch.rand(na, generator=g), torch.rand(nb, generator=g)
        t, order = torch.cat([ta, tb]).sort()
        xa_ = torch.cat([xa, torch.full_like(xb, float("nan"))])[order]
        xb_ = torch.cat([torch.full_like(xa, float("nan")), xb])[order]
        counts = [(~torch.isnan(v)).cumsum(0).to(t.dtype) for v in (xa_, xb_)]
        rows.append(torch.stack([t, xa_, xb_, *counts], dim=1))
    length = max(r.size(0) for r in rows)
    return torch.stack([torch.cat([r, r[-1:].expand(length - r.size(0), -1)]) for r in rows])


class Func(torch.nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.channels, self.hidden = channels, hidden
        self.linear1 = torch.nn.Linear(hidden, 128)
        self.linear2 = torch.nn.Linear(128, channels * hidden)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = self.linear2(self.linear1(z).relu()).tanh()
        return z.view(z.size(0), self.hidden, self.channels)


class CDE(torch.nn.Module):
    def __init__(self, lib, channels: int = 3, hidden: int = 8, out: int = 1, linear=False):
        super().__init__()
        self.lib, self.linear = lib, linear
        self.func = Func(channels, hidden)
        self.initial = torch.nn.Linear(channels, hidden)
        self.readout = torch.nn.Linear(hidden, out)

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        X = (self.lib.LinearInterpolation if self.linear else self.lib.CubicSpline)(coeffs)
        z0 = self.initial(X.evaluate(X.interval[0]))
        z = self.lib.cdeint(X=X, z0=z0, func=self.func, t=X.interval)
        return self.readout(z[..., -1, :]).squeeze(-1)


def _models(libs: dict, **kw: Any) -> dict[str, CDE]:
    torch.manual_seed(0)
    ref = CDE(next(iter(libs.values())), **kw)
    models = {}
    for k, lib in libs.items():
        models[k] = CDE(lib, **kw)
        models[k].load_state_dict(ref.state_dict())
    return models


def _train_step(model: CDE, coeffs: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        model.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(coeffs), y)
        loss.backward()
        return float(loss.detach())

    return run


def _case(name: str, libs: dict, quick: bool) -> tuple[list[dict], dict]:
    """One example: the timed call per module, and how far the results are apart."""
    compat = libs["torchnde.compat"]
    if name == "classification":
        x, y = spirals()
        coeffs = {
            k: lib.hermite_cubic_coefficients_with_backward_differences(x)
            for k, lib in libs.items()
        }
        models = _models(libs)
        fns = {k: _train_step(models[k], coeffs[k], y) for k in libs}
        what = "train step"
    elif name == "irregular":
        x = irregular_batch()
        coeffs = {
            k: lib.hermite_cubic_coefficients_with_backward_differences(x)
            for k, lib in libs.items()
        }
        models = _models(libs, channels=5, hidden=4, out=10)

        def forward(k: str) -> Callable[[], float]:
            def run() -> float:
                with torch.no_grad():
                    return float(models[k](coeffs[k]).sum())

            return run

        fns = {k: forward(k) for k in libs}
        what = "forward"
    else:  # logsig
        x, y = spirals(length=5000)
        x, y = x[:32], y[:32]  # one of the example's batches of 32
        feats = compat.logsig_windows(x, 2, window_length=50)
        coeffs = {k: lib.linear_interpolation_coeffs(feats) for k, lib in libs.items()}
        models = _models(libs, channels=feats.size(-1), linear=True)
        fns = {k: _train_step(models[k], coeffs[k], y) for k in libs}
        what = "train step"
    first = {k: fn() for k, fn in fns.items()}  # warm-up, and the results to compare
    extra: dict[str, Any] = {}
    if what == "train step":
        grads = {
            k: torch.cat([q.grad.reshape(-1) for q in m.parameters()]) for k, m in models.items()
        }
        ref = grads["torchcde"]
        extra["grad_rel_diff"] = float((grads["torchnde.compat"] - ref).norm() / ref.norm())
    extra["coeff_diff"] = float(
        (coeffs["torchcde"] - coeffs["torchnde.compat"]).nan_to_num().abs().max()
    )
    res = C.time_interleaved(
        fns, min_rounds=3 if quick else 5, target_s=1.0 if quick else 3.0, slow_min_rounds=3
    )
    rows = [
        {
            "case": f"{name} ({what})", "lib": k, "ms": res[k]["median"],
            "cpu_ms": res[k]["cpu_median"], "value": first[k],
            "speedup": res["torchcde"]["cpu_median"] / res[k]["cpu_median"],
        }
        for k in libs
    ]  # fmt: skip
    return rows, extra


CASES = ("classification", "irregular", "logsig")


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0], "torchcde,torchnde")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated of {CASES}")
    a = p.parse_args()
    C.set_threads(a.threads)
    import torchcde

    import torchnde.compat.torchcde as compat

    libs = {"torchcde": torchcde, "torchnde.compat": compat}
    rows: list[dict] = []
    extras: dict[str, dict] = {}
    for name in a.cases.split(","):
        case_rows, extras[name] = _case(name, libs, a.quick)
        rows += case_rows
    table = C.markdown_table(
        rows,
        [("case", "example", "s"), ("lib", "module", "s"), ("ms", "ms", "ms"),
         ("cpu_ms", "CPU ms", "ms"), ("speedup", "speed-up (CPU)", "x"),
         ("value", "loss / output sum", "g")],
    )  # fmt: skip
    print(table)
    for name, e in extras.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.1e}" for k, v in e.items()))
    out = C.write_json(
        "compat_torchcde",
        {"machine": C.machine_info(), "rows": rows, "diffs": extras, "table": table},
        a.out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
