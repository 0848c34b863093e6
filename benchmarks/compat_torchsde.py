"""compat_torchsde: torchsde's README example, torchsde vs torchnde.compat.torchsde.

The example from torchsde's README, unchanged except for the import: batch 32, state 3,
Brownian 2, general noise, Itô, ``ys = sdeint(sde, y0, ts)`` with 20 output times on [0, 1]
and torchsde's defaults (method "euler", dt = 1e-3: 1000 steps, a fresh default Brownian
motion per call), float32. Rows, timed round-robin in one process:

- forward: ``sdeint(sde, y0, ts)`` under ``torch.no_grad()``;
- forward + backward: ``sdeint`` then ``ys.pow(2).mean().backward()`` (backprop);
- adjoint forward + backward: ``sdeint_adjoint`` then the same backward, on the same SDE
  declared Stratonovich and solved with method "midpoint" (the compat module's stochastic
  adjoint for Itô SDEs with general noise raises NotImplementedError);
- latent-SDE Lorenz: the SDE part of one training step of torchsde's
  ``examples/latent_sde_lorenz.py`` at its settings (latent 4, context 64, hidden 128,
  softplus MLPs, a per-dimension diffusion net, posterior drift reading the context at
  ``searchsorted(ts, t)``, ``sdeint(..., dt=1e-2, logqp=True, method="euler")`` on 100
  output times over [0, 2]: 200 steps), batch 256 (``--lorenz-batch``), forward and
  ``backward`` of ``zs.pow(2).mean() + log_ratio.mean()``. The model is re-written here
  (same architecture), not copied; the GRU encoder, identical for both, is left out.

    .venv/bin/python benchmarks/compat_torchsde.py --quick    # ~30 s
    .venv/bin/python benchmarks/compat_torchsde.py
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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

batch_size, state_size, brownian_size = 32, 3, 2
t_size = 20


class SDE(torch.nn.Module):  # torchsde's README example
    noise_type = "general"
    sde_type = "ito"

    def __init__(self) -> None:
        super().__init__()
        self.mu = torch.nn.Linear(state_size, state_size)
        self.sigma = torch.nn.Linear(state_size, state_size * brownian_size)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma(y).view(batch_size, state_size, brownian_size)


class StratonovichSDE(SDE):
    sde_type = "stratonovich"


def _cases(lib: Any, sde: SDE, y0: torch.Tensor, ts: torch.Tensor) -> dict[str, Any]:
    strat = StratonovichSDE()
    strat.load_state_dict(sde.state_dict())

    def forward() -> None:
        with torch.no_grad():
            ys = lib.sdeint(sde, y0, ts)
        assert ys.shape == (t_size, batch_size, state_size)

    def backprop() -> None:
        sde.zero_grad()
        lib.sdeint(sde, y0, ts).pow(2).mean().backward()

    def adjoint() -> None:
        strat.zero_grad()
        lib.sdeint_adjoint(strat, y0, ts, method="midpoint").pow(2).mean().backward()

    return {"forward": forward, "forward + backward": backprop, "adjoint fwd + bwd": adjoint}


class LorenzLatentSDE(torch.nn.Module):
    """The SDE of torchsde's latent-SDE Lorenz example (same layers and sizes)."""

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, ts: torch.Tensor, batch: int, latent: int = 4, context: int = 64,
                 hidden: int = 128) -> None:  # fmt: skip
        super().__init__()
        nn = torch.nn

        def mlp(n_in: int, n_out: int) -> torch.nn.Module:
            return nn.Sequential(
                nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                nn.Softplus(), nn.Linear(hidden, n_out),
            )  # fmt: skip

        self.f_net = mlp(latent + context, latent)
        self.h_net = mlp(latent, latent)
        self.g_nets = nn.ModuleList(
            nn.Sequential(nn.Linear(1, hidden), nn.Softplus(), nn.Linear(hidden, 1), nn.Sigmoid())
            for _ in range(latent)
        )
        self.ts = ts
        self.ctx = torch.randn(len(ts), batch, context)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        i = min(torch.searchsorted(self.ts, t, right=True), len(self.ts) - 1)
        return self.f_net(torch.cat((y, self.ctx[i]), dim=1))

    def h(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.h_net(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ys = torch.split(y, split_size_or_sections=1, dim=1)
        return torch.cat([net(yi) for net, yi in zip(self.g_nets, ys)], dim=1)


def _lorenz_case(lib: Any, batch: int) -> Any:
    torch.manual_seed(1)
    ts = torch.linspace(0.0, 2.0, 100)
    sde = LorenzLatentSDE(ts, batch)
    z0 = torch.randn(batch, 4)

    def step() -> None:
        sde.zero_grad()
        zs, log_ratio = lib.sdeint(sde, z0, ts, dt=1e-2, logqp=True, method="euler")
        (zs.pow(2).mean() + log_ratio.mean()).backward()

    return step


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], "torchsde,compat")
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--lorenz-batch", type=int, default=256, help="batch of the latent-SDE case")
    args = p.parse_args()
    set_threads(args.threads)
    import torchsde

    from torchnde.compat import torchsde as compat

    torch.manual_seed(0)
    sde = SDE()
    y0 = torch.full((batch_size, state_size), 0.1)
    ts = torch.linspace(0, 1, t_size)
    libs = {"torchsde": torchsde, "compat": compat}
    rows, raw = [], {}
    for case in ("forward", "forward + backward", "adjoint fwd + bwd", "latent-SDE Lorenz step"):
        if case == "latent-SDE Lorenz step":
            fns = {name: _lorenz_case(lib, args.lorenz_batch) for name, lib in libs.items()}
        else:
            fns = {name: _cases(lib, sde, y0, ts)[case] for name, lib in libs.items()}
        for fn in fns.values():
            fn()  # warm-up
        res = time_interleaved(
            fns,
            min_rounds=3 if args.quick else 7,
            max_rounds=5 if args.quick else 15,
            target_s=0.5 if args.quick else 2.0,
        )
        raw[case] = res
        ref = res["torchsde"]["median"]
        new = res["compat"]["median"]
        rows.append(
            {
                "case": case,
                "torchsde_ms": ref,
                "compat_ms": new,
                "speedup": ref / new,
                "rounds": res["compat"]["n"],
            }
        )
        print(f"{case}: torchsde {ref * 1e3:.1f} ms, compat {new * 1e3:.1f} ms", flush=True)
    cols = [
        ("case", "case", "s"),
        ("torchsde_ms", "torchsde (ms)", "ms"),
        ("compat_ms", "compat (ms)", "ms"),
        ("speedup", "speed-up", "x"),
        ("rounds", "rounds", "s"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    path = write_json(
        "compat_torchsde",
        {"machine": machine_info(), "config": vars(args), "rows": rows, "raw": raw, "table": table},
        args.out,
    )
    print(path)


if __name__ == "__main__":
    main()
