"""Latent ODE benchmarks: a training step against torchdiffeq's latent ODE example, and
per-sample stepping against the union-of-times trick on irregular batches.

1. Training step. The model of torchdiffeq's ``examples/latent_ode.py`` (written again here
   from its description, not copied): a recognition RNN (``tanh`` cell, 25 hidden units, run
   backwards over the observations), latent dimension 4, an ELU MLP vector field with 20
   units, a ReLU MLP decoder with 20 units, the Gaussian likelihood with noise std 0.3 and
   the analytic KL, on its noisy spirals (1000 spirals, 100 observed times each, all in one
   batch as in the example), ``odeint`` with dopri5 at its default tolerances (rtol 1e-7,
   atol 1e-9), backpropagation through the solver. torchnde runs the same modules from the
   same weights, with the same noise draws, through ``torchnde.odeint`` (the same solve,
   torchdiffeq's call) and through ``torchnde.solve`` with ``Dopri5`` and a PID controller
   at the same tolerances. Reported: time per step (round-robin), the NFE of the forward
   solve and the loss after every step, for ``--steps`` Adam steps.
2. Irregular batches. ``LatentODE`` (ODE-RNN encoder) on the toy periodic series with
   per-sample times (each series 20 points of its own drawn uniformly on [0, 5]): one ELBO
   forward + backward with a per-sample controller (each sample its own intervals and steps)
   against a joint controller (the batch on the union of its times: ``B * 20`` grid points),
   at batch sizes 8, 32, 64.

    PYTHONPATH=src .venv/bin/python benchmarks/latent_ode.py      # a few minutes, one core
"""

from __future__ import annotations

import math
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
import numpy as np
import torch
from torch import nn

import torchnde as tn
from torchnde import models as M

# ------------------------------------------------------------------- torchdiffeq's example


def spirals(n: int = 1000, ntotal: int = 1000, nsample: int = 100, seed: int = 0) -> Any:
    """Noisy clockwise/counter-clockwise Archimedean spirals (the example's data: a = 0,
    b = 0.3, t in [0, 6 pi], noise std 0.3), each observed at ``nsample`` consecutive
    points from a random start; returns the shared sample times and the noisy samples."""
    rng = np.random.default_rng(seed)
    orig_ts = np.linspace(0, 6 * np.pi, ntotal)
    samp_ts = orig_ts[:nsample]
    zs_cw = 6 * np.pi + orig_ts
    rw_cw = 0.3 * zs_cw
    xs_cw, ys_cw = rw_cw * np.cos(zs_cw) - 5.0, rw_cw * np.sin(zs_cw)
    zs_cc = orig_ts
    rw_cc = 0.3 * zs_cc
    xs_cc, ys_cc = rw_cc * np.cos(zs_cc) + 5.0, rw_cc * np.sin(zs_cc)
    cw = np.stack([xs_cw, ys_cw], 1)[::-1]
    cc = np.stack([xs_cc, ys_cc], 1)
    trajs = []
    for _ in range(n):
        t0 = int(rng.integers(0, ntotal - 2 * nsample)) + nsample
        traj = cc if rng.random() > 0.5 else cw
        trajs.append(traj[t0 : t0 + nsample] + rng.normal(size=(nsample, 2)) * 0.3)
    return (
        torch.tensor(samp_ts, dtype=torch.float32),
        torch.tensor(np.stack(trajs), dtype=torch.float32),
    )


class Field(nn.Module):
    """ELU MLP latent -> 20 -> 20 -> latent."""

    def __init__(self, latent: int = 4, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
            nn.Linear(hidden, latent),
        )  # fmt: skip
        self.nfe = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor, *args: Any) -> torch.Tensor:
        self.nfe += 1
        return self.net(z)


class Recognition(nn.Module):
    """``h = tanh(W [x, h])`` run backwards over the observations, then a linear map to the
    mean and log-variance of z0."""

    def __init__(self, latent: int = 4, obs: int = 2, hidden: int = 25) -> None:
        super().__init__()
        self.i2h = nn.Linear(obs + hidden, hidden)
        self.h2o = nn.Linear(hidden, 2 * latent)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in reversed(range(x.shape[1])):
            h = torch.tanh(self.i2h(torch.cat([x[:, t], h], dim=1)))
        return self.h2o(h)


class Decoder(nn.Module):
    def __init__(self, latent: int = 4, obs: int = 2, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, obs))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def elbo_loss(out: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> Any:
    noise_logvar = 2 * math.log(0.3)
    logpx = -0.5 * (math.log(2 * math.pi) + noise_logvar + (x - out) ** 2 / math.exp(noise_logvar))
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar)  # KL(q || N(0, I))
    return (-logpx.sum(dim=(1, 2)) + kl.sum(-1)).mean()


def make_step(lib: str, modules: nn.ModuleList, ts: torch.Tensor, x: torch.Tensor) -> Any:
    rec, field, dec = modules
    opt = torch.optim.Adam(modules.parameters(), lr=0.01)
    draws = torch.Generator().manual_seed(1)
    ctl = tn.PIDController(rtol=1e-7, atol=1e-9)

    def step() -> tuple[float, int]:
        out = rec(x)
        mean, logvar = out.chunk(2, dim=-1)
        eps = torch.randn(mean.shape, generator=draws)
        z0 = mean + eps * torch.exp(0.5 * logvar)
        field.nfe = 0
        if lib == "torchdiffeq":
            import torchdiffeq

            zs = torchdiffeq.odeint(field, z0, ts).permute(1, 0, 2)
        elif lib == "torchnde.odeint":
            zs = tn.odeint(field, z0, ts).permute(1, 0, 2)
        else:
            sol = tn.solve(
                tn.ODETerm(field), tn.Dopri5(), ts[0], ts[-1], z0,
                saveat=tn.SaveAt(ts=ts), controller=ctl,
            )  # fmt: skip
            zs = sol.ys.permute(1, 0, 2)
        nfe = field.nfe
        loss = elbo_loss(dec(zs), x, mean, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach()), nfe

    return step


def bench_training(steps: int, libs: list[str]) -> dict[str, Any]:
    ts, x = spirals()
    torch.manual_seed(0)
    base = nn.ModuleList([Recognition(), Field(), Decoder()])
    state = {k: v.clone() for k, v in base.state_dict().items()}
    runs: dict[str, Any] = {}
    for lib in libs:
        mods = nn.ModuleList([Recognition(), Field(), Decoder()])
        mods.load_state_dict(state)
        runs[lib] = {"step": make_step(lib, mods, ts, x), "loss": [], "nfe": []}

    def timed(lib: str) -> Any:
        def call() -> None:
            loss, nfe = runs[lib]["step"]()
            runs[lib]["loss"].append(loss)
            runs[lib]["nfe"].append(nfe)

        return call

    # every lib takes exactly `steps` steps: one warm-up (untimed) then round-robin
    for lib in libs:
        timed(lib)()
    n = max(1, steps - 1)
    timings = time_interleaved(
        {lib: timed(lib) for lib in libs}, min_rounds=n, max_rounds=n, slow_min_rounds=n
    )
    rows = []
    ref = timings["torchdiffeq"]["median"] if "torchdiffeq" in timings else None
    for lib in libs:
        med = timings[lib]["median"]
        rows.append(
            {
                "lib": lib,
                "ms": 1e3 * med,
                "ratio": (ref / med) if ref else None,
                "nfe_first": runs[lib]["nfe"][0],
                "nfe_last": runs[lib]["nfe"][-1],
                "loss_first": runs[lib]["loss"][0],
                "loss_last": runs[lib]["loss"][-1],
                "cpu_wall": timings[lib]["cpu_median"] / med,
            }
        )
    # the solve alone (forward + backward of the latent trajectory), where the libraries differ
    # (the 100-step recognition RNN and the decoder are the same code in every column)
    z0 = torch.randn(1000, 4)
    field = Field()
    field.load_state_dict(base[1].state_dict())
    ctl = tn.PIDController(rtol=1e-7, atol=1e-9)

    def solve_only(lib: str) -> Any:
        def call() -> None:
            z = z0.clone().requires_grad_(True)
            if lib == "torchdiffeq":
                import torchdiffeq

                zs = torchdiffeq.odeint(field, z, ts)
            elif lib == "torchnde.odeint":
                zs = tn.odeint(field, z, ts)
            else:
                zs = tn.solve(
                    tn.ODETerm(field), tn.Dopri5(), ts[0], ts[-1], z,
                    saveat=tn.SaveAt(ts=ts), controller=ctl,
                ).ys  # fmt: skip
            zs.square().sum().backward()

        return call

    for lib in libs:
        solve_only(lib)()
    solve_t = time_interleaved({lib: solve_only(lib) for lib in libs}, min_rounds=5)
    ref_s = solve_t["torchdiffeq"]["median"] if "torchdiffeq" in solve_t else None
    for r in rows:
        med = solve_t[r["lib"]]["median"]
        r["solve_ms"] = 1e3 * med
        r["solve_ratio"] = (ref_s / med) if ref_s else None
    losses = {lib: runs[lib]["loss"] for lib in libs}
    if "torchdiffeq" in losses:
        ref_l = np.array(losses["torchdiffeq"])
        for r in rows:
            rel = np.abs(np.array(losses[r["lib"]]) - ref_l) / np.abs(ref_l)
            r["loss_rel_diff"] = float(rel.max())
    return {"rows": rows, "losses": losses, "steps": steps}


# --------------------------------------------------------------- per-sample vs union of times


def _irregular_case(b: int, points: int) -> list[dict[str, Any]]:
    from torchnde.data.periodic import generate_periodic

    g = torch.Generator().manual_seed(b)
    ts = torch.sort(torch.rand(b, points, generator=g) * 5.0, dim=1).values
    freq = 0.4 + 0.4 * torch.rand(b, 1, generator=g)
    x = (torch.sin(2 * math.pi * freq * ts) + 1.0)[..., None]
    grid, _ = generate_periodic(1, 50, 5.0)
    target = (torch.sin(2 * math.pi * freq * grid) + 1.0)[..., None]
    models = {}
    for name, per_sample in (("per-sample", True), ("union", False)):
        torch.manual_seed(0)
        ctl = tn.PIDController(rtol=1e-3, atol=1e-4, per_sample=per_sample)
        models[name] = M.LatentODE(1, 8, encoder_hidden=20, hidden_units=32, controller=ctl)
    models["union"].load_state_dict(models["per-sample"].state_dict())
    info: dict[str, Any] = {}

    def run(name: str) -> Any:
        def call() -> None:
            m = models[name]
            torch.manual_seed(0)
            loss = -m.elbo(ts, x, ts_target=grid, x_target=target, t0=0.0).mean()
            loss.backward()
            info[name] = (float(loss.detach()), m.encoder.nfe, m.encoder.num_solves)

        return call

    for name in models:
        run(name)()
    t = time_interleaved({k: run(k) for k in models}, min_rounds=3, max_rounds=10)
    rows = []
    for name in models:
        loss, nfe, solves = info[name]
        rows.append(
            {
                "batch": b,
                "mode": name,
                "ms": 1e3 * t[name]["median"],
                "encoder_nfe": nfe,
                "encoder_solves": solves,
                "loss": loss,
            }
        )
    return rows


def bench_irregular(batches: list[int], points: int = 20) -> list[dict[str, Any]]:
    rows = []
    for b in batches:
        rows += _irregular_case(b, points)
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchdiffeq,torchnde.odeint,torchnde.solve")
    p.add_argument("--steps", type=int, default=10, help="training steps per library")
    p.add_argument("--batches", default="8,32,64", help="batch sizes of the irregular part")
    p.add_argument("--quick", action="store_true", help="3 steps, batches 8,32")
    a = p.parse_args()
    set_threads(a.threads)
    steps, batches = (3, [8, 32]) if a.quick else (a.steps, [int(v) for v in a.batches.split(",")])
    libs = a.libs.split(",")
    train = bench_training(steps, libs)
    print("## latent ODE training step (torchdiffeq's example model, 1000 spirals)\n")
    print(
        markdown_table(
            train["rows"],
            [
                ("lib", "library", "s"),
                ("ms", "ms/step", "1f"),
                ("ratio", "torchdiffeq/this", "x"),
                ("nfe_first", "NFE step 1", "d"),
                ("nfe_last", f"NFE step {steps}", "d"),
                ("solve_ms", "ms solve only", "1f"),
                ("solve_ratio", "torchdiffeq/this (solve)", "x"),
                ("loss_first", "loss step 1", "1f"),
                ("loss_last", f"loss step {steps}", "1f"),
                ("loss_rel_diff", "max rel. loss diff vs torchdiffeq", "e"),
                ("cpu_wall", "cpu/wall", "x"),
            ],
        )
    )
    irr = bench_irregular(batches)
    print("\n## irregular batches: per-sample stepping vs union of times (LatentODE ELBO f+b)\n")
    print(
        markdown_table(
            irr,
            [
                ("batch", "batch", "d"),
                ("mode", "mode", "s"),
                ("ms", "ms", "1f"),
                ("encoder_solves", "encoder solves", "d"),
                ("encoder_nfe", "encoder NFE", "d"),
                ("loss", "loss", "g"),
            ],
        )
    )
    path = write_json(
        "latent_ode",
        {"machine": machine_info(), "training": train, "irregular": irr},
        a.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
