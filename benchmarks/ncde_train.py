"""ncde_train: neural-CDE training steps, torchnde against torchcde's classification example.

The problem and model of torchcde's ``example/time_series_classification.py``, written anew
here: 128 spirals of 100 points (time, x, y; half clockwise, noise 0.01), Hermite cubic
coefficients with backward differences, hidden size 8, vector field Linear(8, 128) -> ReLU ->
Linear(128, 8 * 3) -> tanh, a linear initial map of the first observation and a linear
read-out, binary cross-entropy, Adam (lr 1e-3), batches of 32. The example's solve is
torchcde's default: dopri5 at torchdiffeq's default tolerances (rtol 1e-7, atol 1e-9) with
the continuous adjoint (``adjoint=True``).

Runs, all in one process from the same initial weights and the same batches:

  torchcde  adjoint   the example as it is (cdeint default adjoint=True)
            backprop  the same with adjoint=False
  torchnde  backsolve torchnde.models.NeuralCDE(interpolation="hermite") with the example's
                      vector field, dopri5 at the same tolerances, BacksolveAdjoint
            direct    the same with DirectAdjoint (autograd through the solver)

The steps of the runs are interleaved (one step of each in turn), so contention on a shared
machine hits them alike. Reported per run: the median wall time and process CPU time of a
step, the vector-field evaluations of the forward solve and of the backward pass, the loss
after every step, and the speed ratio t_torchcde / t_torchnde of the matching gradient mode
(adjoint vs backsolve, backprop vs direct; > 1: torchnde faster).

    .venv/bin/python benchmarks/ncde_train.py --quick     # 2 steps (~3 min CPU)
    .venv/bin/python benchmarks/ncde_train.py             # 4 steps (~6 min CPU)
    .venv/bin/python benchmarks/ncde_train.py --rtol 1e-4 --atol 1e-6   # looser, faster
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# _common pins the BLAS/OpenMP thread pools, so it is imported before torch.
import _common as C

# isort: split
import torch

import torchnde as tn
from torchnde.models import NeuralCDE

NUM, LENGTH, HIDDEN, WIDTH, BATCH = 128, 100, 8, 128, 32
RTOL, ATOL = 1e-7, 1e-9  # torchdiffeq's defaults, which the example's cdeint call uses


def spirals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(NUM, LENGTH, 3) series (time, x, y) and labels: decaying spirals from a random phase,
    the first half turning the other way, with Gaussian noise of 0.01."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0.0, 4 * math.pi, LENGTH)
    phase = torch.rand(NUM, 1, generator=gen) * 2 * math.pi
    radius = 1 / (1 + 0.5 * t)
    x = torch.cos(phase + t) * radius
    y = torch.sin(phase + t) * radius
    x[: NUM // 2] = -x[: NUM // 2]
    x = x + 0.01 * torch.randn(x.shape, generator=gen)
    y = y + 0.01 * torch.randn(y.shape, generator=gen)
    labels = torch.zeros(NUM)
    labels[: NUM // 2] = 1
    perm = torch.randperm(NUM, generator=gen)
    data = torch.stack([t.expand(NUM, LENGTH), x, y], dim=-1)
    return data[perm], labels[perm]


class Field(torch.nn.Module):
    """The example's vector field, counting its evaluations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear1 = torch.nn.Linear(HIDDEN, WIDTH)
        self.linear2 = torch.nn.Linear(WIDTH, HIDDEN * channels)
        self.channels = channels
        self.n = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.n += 1
        out = torch.tanh(self.linear2(torch.relu(self.linear1(z))))
        return out.view(*z.shape[:-1], HIDDEN, self.channels)


class TorchcdeModel(torch.nn.Module):
    """The example's model on torchcde."""

    def __init__(self, adjoint: bool, tol: dict[str, float]) -> None:
        super().__init__()
        self.tol = tol
        self.func = Field(3)
        self.initial = torch.nn.Linear(3, HIDDEN)
        self.readout = torch.nn.Linear(HIDDEN, 1)
        self.adjoint = adjoint

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        import torchcde

        X = torchcde.CubicSpline(coeffs)
        z0 = self.initial(X.evaluate(X.interval[0]))
        zs = torchcde.cdeint(
            X=X, z0=z0, func=self.func, t=X.interval, adjoint=self.adjoint, **self.tol
        )
        return self.readout(zs[:, 1])


def torchnde_model(adjoint: Any, tol: dict[str, float] | None = None) -> NeuralCDE:
    """torchnde's NeuralCDE with the example's sizes and vector field (time as channel 0)."""
    return NeuralCDE(
        2,
        HIDDEN,
        1,
        head="classifier",
        interpolation="hermite",
        vector_field=Field(3),
        solver="dopri5",
        adjoint=adjoint,
        **(tol or {"rtol": RTOL, "atol": ATOL}),
    )


def copy_weights(src: TorchcdeModel, dst: NeuralCDE) -> None:
    with torch.no_grad():
        for name in ("initial", "readout"):
            getattr(dst, name).load_state_dict(getattr(src, name).state_dict())
        dst.func.load_state_dict(src.func.state_dict())


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0], "torchnde,torchcde")
    p.add_argument("--quick", action="store_true", help="2 training steps instead of 4")
    p.add_argument("--rtol", type=float, default=RTOL, help="dopri5 rtol (the example's: 1e-7)")
    p.add_argument("--atol", type=float, default=ATOL, help="dopri5 atol (the example's: 1e-9)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --quick)")
    a = p.parse_args()
    C.set_threads(a.threads)
    import torchcde

    steps = a.steps if a.steps is not None else (2 if a.quick else 4)
    tol = {"rtol": a.rtol, "atol": a.atol}
    data, labels = spirals(seed=0)
    t = data[0, :, 0]
    coeffs_cde = torchcde.hermite_cubic_coefficients_with_backward_differences(data)
    torch.manual_seed(0)
    base = TorchcdeModel(adjoint=True, tol=tol)
    runs: dict[str, dict[str, Any]] = {}
    for name, adjoint in (("torchcde/adjoint", True), ("torchcde/backprop", False)):
        m = copy.deepcopy(base)
        m.adjoint = adjoint
        runs[name] = {"model": m, "coeffs": coeffs_cde, "lib": "torchcde"}
    for name, adj in (("torchnde/backsolve", tn.BacksolveAdjoint()), ("torchnde/direct", None)):
        m2 = torchnde_model(adj, tol)
        copy_weights(base, m2)
        runs[name] = {"model": m2, "coeffs": m2.interpolate(data[..., 1:], t), "lib": "torchnde"}
    for r in runs.values():
        r.update(opt=torch.optim.Adam(r["model"].parameters(), lr=1e-3), wall=[], cpu=[])
        r.update(loss=[], nfe_fwd=[], nfe_bwd=[])
    # The same batches for every run: a fixed permutation per epoch.
    gen = torch.Generator().manual_seed(1)
    order: list[torch.Tensor] = []
    while len(order) < steps:
        order += list(torch.randperm(NUM, generator=gen).split(BATCH))
    for i in range(steps):
        index = order[i]
        y = labels[index]
        for r in runs.values():
            model, opt = r["model"], r["opt"]
            func = model.func
            c0, w0 = time.process_time(), time.perf_counter()
            func.n = 0
            if r["lib"] == "torchcde":
                pred = model(r["coeffs"][index]).squeeze(-1)
            else:
                pred = model(r["coeffs"][index], t).squeeze(-1)
            nfe_fwd = func.n
            loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            r["wall"].append(time.perf_counter() - w0)
            r["cpu"].append(time.process_time() - c0)
            r["loss"].append(float(loss.detach()))
            r["nfe_fwd"].append(nfe_fwd)
            r["nfe_bwd"].append(func.n - nfe_fwd)
    rows = []
    pairs = {"torchcde/adjoint": "torchnde/backsolve", "torchcde/backprop": "torchnde/direct"}
    for name, r in runs.items():
        row = {
            "run": name,
            "wall_median_s": statistics.median(r["wall"]),
            "cpu_median_s": statistics.median(r["cpu"]),
            "nfe_fwd": statistics.median(r["nfe_fwd"]),
            "nfe_bwd": statistics.median(r["nfe_bwd"]),
            "loss_first": r["loss"][0],
            "loss_last": r["loss"][-1],
            "losses": r["loss"],
        }
        rows.append(row)
    by = {row["run"]: row for row in rows}
    for peer, ours in pairs.items():
        by[ours]["ratio"] = by[peer]["wall_median_s"] / by[ours]["wall_median_s"]
        by[ours]["ratio_cpu"] = by[peer]["cpu_median_s"] / by[ours]["cpu_median_s"]
        diffs = [abs(x - y) for x, y in zip(by[peer]["losses"], by[ours]["losses"])]
        by[ours]["max_loss_diff"] = max(diffs)
    cols = [
        ("run", "run", "s"),
        ("wall_median_s", "step ms", "ms"),
        ("cpu_median_s", "cpu ms", "ms"),
        ("ratio", "torchcde / torchnde", "x"),
        ("nfe_fwd", "NFE fwd", "g"),
        ("nfe_bwd", "NFE bwd", "g"),
        ("loss_first", "loss step 1", "g"),
        ("loss_last", f"loss step {steps}", "g"),
        ("max_loss_diff", "max |loss diff| vs peer", "e"),
    ]
    print(C.markdown_table(rows, cols))
    path = C.write_json(
        "ncde_train",
        {"machine": C.machine_info(), "steps": steps, "tol": tol, "rows": rows},
        a.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
