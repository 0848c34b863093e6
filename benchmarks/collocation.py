"""Collocation training against solver-in-the-loop training of a neural ODE, at equal final
error.

The problem of torchdiffeq's ``ode_demo.py``: ``y' = (y^3) A`` with
``A = [[-0.1, 2], [-2, -0.1]]`` from ``(2, 0)``, sampled at ``--samples`` times on
``[0, --t1]`` (clean, solved by torchnde at rtol 1e-10); the model ``y' = MLP(y^3)``
(2-50-2, tanh, float64). Both methods stop when the whole trajectory, solved from ``y0`` with
Dopri5 (rtol 1e-6), reaches the mean squared error ``--target`` (checked every 10 steps):

- ``solver``: Adam (lr 1e-2) on that trajectory loss, through ``torchnde.solve``;
- ``collocation``: ``torchnde.discovery.fit_collocation`` (kernel-smoothed derivatives,
  regression, no solver; Adam then L-BFGS), then the same solver-in-the-loop Adam until the
  target.

Reported: wall time and steps of each, the trajectory MSE reached, the speed-up.

    .venv/bin/python benchmarks/collocation.py [--target 1e-3] [--max-s 240]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import base_parser, machine_info, markdown_table, set_threads, write_json

# isort: split
import torch
from torch import nn

import torchnde as tn
from torchnde.discovery import fit_collocation

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


def spiral(t, y, args=None):
    return (y**3) @ A


class Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)).double()

    def forward(self, t, y, args=None):
        return self.net(y**3)


def trajectory(field, ts, y0, rtol):
    return tn.solve(
        tn.ODETerm(field),
        tn.Dopri5(),
        0.0,
        float(ts[-1]),
        y0,
        saveat=tn.SaveAt(ts=ts),
        controller=tn.PIDController(rtol=rtol, atol=rtol * 1e-2),
        max_steps=100000,
        throw=False,
    ).ys


def train_through_solver(field, ts, data, target, max_s, start_time):
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    steps, mse = 0, float("inf")
    while time.perf_counter() - start_time < max_s:
        if steps % 10 == 0:
            with torch.no_grad():
                mse = float(((trajectory(field, ts, data[0], 1e-6) - data) ** 2).mean())
            if mse <= target:
                break
        opt.zero_grad()
        loss = ((trajectory(field, ts, data[0], 1e-4) - data) ** 2).mean()
        loss.backward()
        opt.step()
        steps += 1
    return steps, mse


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "solver,collocation")
    p.add_argument("--target", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=201)
    p.add_argument("--t1", type=float, default=10.0)
    p.add_argument("--max-s", type=float, default=240.0, help="time cap per method")
    args = p.parse_args()
    set_threads(args.threads)
    ts = torch.linspace(0.0, args.t1, args.samples, dtype=torch.float64)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    data = trajectory(spiral, ts, y0, 1e-10)
    rows = []
    for method in ("solver", "collocation"):
        torch.manual_seed(0)
        field = Field()
        start = time.perf_counter()
        colloc_s = 0.0
        if method == "collocation":
            fit_collocation(
                field, data, ts, kernel="epanechnikov", bandwidth=0.02, steps=500, lbfgs_steps=200
            )
            colloc_s = time.perf_counter() - start
        steps, mse = train_through_solver(field, ts, data, args.target, args.max_s, start)
        wall = time.perf_counter() - start
        rows.append(
            {
                "method": method,
                "wall_s": wall,
                "collocation_s": colloc_s,
                "solver_steps": steps,
                "trajectory_mse": mse,
                "reached": mse <= args.target,
            }
        )
        print(rows[-1], flush=True)
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(
        markdown_table(
            rows,
            [
                ("method", "method", "s"),
                ("wall_s", "wall s", "1f"),
                ("collocation_s", "collocation s", "1f"),
                ("solver_steps", "solver-in-the-loop steps", "g"),
                ("trajectory_mse", "trajectory MSE", "e"),
                ("reached", f"reached {args.target:g}", "g"),
            ],
        )
    )
    bound = "" if rows[0]["reached"] else ">= (solver-in-the-loop hit the time cap) "
    print(f"speed-up of collocation at equal final error: {bound}{speedup:.1f}x")
    path = write_json(
        "collocation",
        {
            "machine": machine_info(),
            "args": vars(args),
            "rows": rows,
            "speedup": speedup,
            "speedup_is_lower_bound": not rows[0]["reached"],
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
