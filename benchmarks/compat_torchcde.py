"""torchcde's README example, original against ``torchnde.compat.torchcde``, side by side.

The example of torchcde's README (``example/time_series_classification.py``): classify
clockwise from anticlockwise spirals, 128 series of length 100 with channels (t, x, y),
Hermite cubic coefficients with backward differences, a neural CDE with hidden size 8 and a
128-wide MLP vector field, ``cdeint(X, func, z0, X.interval)`` with its defaults (dopri5,
rtol 1e-4, atol 1e-6, ``adjoint=True``), binary cross-entropy. One training step (forward +
backward) is timed for each module, the same code with only the import changed.
Run: ``.venv/bin/python benchmarks/compat_torchcde.py [--quick]``.
"""

from __future__ import annotations

import math
import os
import sys

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
    def __init__(self, lib, channels: int = 3, hidden: int = 8) -> None:
        super().__init__()
        self.lib = lib
        self.func = Func(channels, hidden)
        self.initial = torch.nn.Linear(channels, hidden)
        self.readout = torch.nn.Linear(hidden, 1)

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        X = self.lib.CubicSpline(coeffs)
        z0 = self.initial(X.evaluate(X.interval[0]))
        z = self.lib.cdeint(X=X, z0=z0, func=self.func, t=X.interval)
        return self.readout(z[:, 1]).squeeze(-1)


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0], "torchcde,torchnde")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    C.set_threads(a.threads)
    import torchcde

    import torchnde.compat.torchcde as compat

    libs = {"torchcde": torchcde, "torchnde.compat": compat}
    x, y = spirals()
    coeffs = {
        k: lib.hermite_cubic_coefficients_with_backward_differences(x) for k, lib in libs.items()
    }
    coeff_diff = float((coeffs["torchcde"] - coeffs["torchnde.compat"]).abs().max())
    torch.manual_seed(0)
    ref = CDE(torchcde)
    models = {}
    for k, lib in libs.items():
        m = CDE(lib)
        m.load_state_dict(ref.state_dict())
        models[k] = m

    def step(k: str):
        def run() -> float:
            m = models[k]
            m.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(m(coeffs[k]), y)
            loss.backward()
            return float(loss.detach())

        return run

    losses = {k: step(k)() for k in libs}
    grads = {k: torch.cat([q.grad.reshape(-1) for q in m.parameters()]) for k, m in models.items()}
    gdiff = float((grads["torchnde.compat"] - grads["torchcde"]).norm() / grads["torchcde"].norm())
    res = C.time_interleaved(
        {k: step(k) for k in libs}, min_rounds=3 if a.quick else 5, target_s=1.0 if a.quick else 3.0
    )
    coeff_t = C.time_interleaved(
        {
            k: (lambda lib=lib: lib.hermite_cubic_coefficients_with_backward_differences(x))
            for k, lib in libs.items()
        },
        min_rounds=10,
    )
    rows = []
    for k in libs:
        rows.append({
            "lib": k, "coeffs": coeff_t[k]["median"], "step": res[k]["median"],
            "step_cpu": res[k]["cpu_median"], "loss": losses[k],
            "speedup": res["torchcde"]["cpu_median"] / res[k]["cpu_median"],
        })  # fmt: skip
    table = C.markdown_table(
        rows,
        [("lib", "module", "s"), ("coeffs", "coeffs ms", "ms"),
         ("step", "train step ms", "ms"), ("step_cpu", "step cpu ms", "ms"),
         ("speedup", "speed-up (cpu)", "x"), ("loss", "loss", "g")],
    )  # fmt: skip
    print(table)
    print(f"\ncoefficients max |diff| {coeff_diff:.1e}; gradient relative L2 diff {gdiff:.1e}")
    out = C.write_json(
        "compat_torchcde",
        {"machine": C.machine_info(), "rows": rows, "coeff_diff": coeff_diff,
         "grad_rel_diff": gdiff, "table": table},
        a.out,
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
