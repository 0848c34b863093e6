"""GRAND's sparse diffusion step against the number of edges (10^3 to 10^6).

One explicit Euler step X + dt (A - I) X of graph neural diffusion on a random graph with
average in-degree 10 (N = E / 10 nodes, 16 channels), timed for: linear diffusion with fixed
weights (gather + ``index_add``, torchnde's ``DiffusionField``), the same product with a
``torch.sparse`` CSR matrix (the alternative layout), and nonlinear diffusion (the attention
weights recomputed from X at every step, ``GraphAttention``). Reports the time per step and the
slope of log(time) against log(edges) fitted over E >= 10^4 (where per-call overhead no longer
dominates) and over the whole range: a slope of about 1 means linear in the edges.

    python benchmarks/graphs.py            # 10^3 .. 10^6 edges, about 1 min
    python benchmarks/graphs.py --quick    # 10^3 .. 10^5
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np
import torch

from _common import machine_info, markdown_table, set_threads, time_fn, write_json
from torchnde.graphs import DiffusionField, Graph, GraphAttention


def _graph(num_edges: int, seed: int = 0) -> Graph:
    n = max(num_edges // 10, 2)
    gen = torch.Generator().manual_seed(seed)
    return Graph(torch.randint(0, n, (2, num_edges), generator=gen), n)


def _cases(num_edges: int, channels: int, dt: float = 0.1) -> tuple[Graph, dict[str, Any]]:
    """The graph and the three Euler steps timed on it."""
    g = _graph(num_edges)
    x = torch.randn(1, g.num_nodes, channels)
    lin = DiffusionField(g)
    w = g.rw_weight()
    att = DiffusionField(g, GraphAttention(channels, 16), nonlinear=True)
    a_csr = (
        torch.sparse_coo_tensor(torch.stack([g.dst, g.src]), w, (g.num_nodes, g.num_nodes))
        .coalesce()
        .to_sparse_csr()
    )
    inflow = w.new_zeros(g.num_nodes).index_add(0, g.dst, w)[:, None]  # 0 at isolated nodes
    t0 = torch.tensor(0.0)
    return g, {
        "linear (index_add)": lambda: x + dt * lin(t0, x, w),
        "linear (sparse CSR)": lambda: (
            x + dt * (torch.sparse.mm(a_csr, x[0]) - inflow * x[0])[None]
        ),
        "nonlinear (attention)": lambda: x + dt * att(t0, x),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target-s", type=float, default=0.3)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    set_threads(a.threads)
    torch.sparse.check_sparse_tensor_invariants.disable()
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    top = 5 if a.quick else 6
    edges = [int(round(10**e)) for e in np.arange(3, top + 0.01, 0.5)]
    rows = []
    for e in edges:
        g, cases = _cases(e, a.channels)
        with torch.no_grad():
            ref = cases["linear (index_add)"]()
            torch.testing.assert_close(cases["linear (sparse CSR)"](), ref, rtol=1e-4, atol=1e-5)
            for name, fn in cases.items():
                s = time_fn(fn, warmup=2, min_repeats=5, target_s=a.target_s)
                rows.append(
                    {"edges": e, "nodes": g.num_nodes, "kind": name, "ms": 1e3 * s["median"]}
                )
    slopes = {}
    for kind in {r["kind"] for r in rows}:
        pts = [(r["edges"], r["ms"]) for r in rows if r["kind"] == kind]
        le, lt = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        big = le >= np.log(1e4) - 1e-9
        slopes[kind] = {
            "slope_all": float(np.polyfit(le, lt, 1)[0]),
            "slope_ge_1e4": float(np.polyfit(le[big], lt[big], 1)[0]) if big.sum() > 1 else None,
        }
    path = write_json("graphs", {"machine": machine_info(), "args": vars(a), "rows": rows,
                                 "slopes": slopes})  # fmt: skip
    print(markdown_table(rows, [("edges", "edges", "d"), ("nodes", "nodes", "d"),
                                ("kind", "step", "s"), ("ms", "ms per step", "g")]))  # fmt: skip
    for kind, s in sorted(slopes.items()):
        print(
            f"{kind}: log-log slope {s['slope_ge_1e4']:.3f} (E >= 1e4), {s['slope_all']:.3f} (all)"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
