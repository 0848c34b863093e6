"""torchnde.graphs: layers against dense references, permutation equivariance, GRAND's diffusion
invariants (explicit and implicit solvers), GDE gradients against finite differences,
time-varying graphs, FDGNN's contractive reservoirs, errors, and the two experiments."""

from __future__ import annotations

import json
import types

import pytest
import torch
from torch import nn

import torchnde as tn
from torchnde.graphs import (
    FDGNN,
    GDE,
    GRAND,
    DiffusionField,
    GATConv,
    GCNConv,
    Graph,
    GraphAttention,
    GraphReservoir,
    GraphSequence,
    GraphVectorField,
    Pointwise,
    SAGEConv,
    as_graph,
    ridge_readout,
    segment_softmax,
)

D64 = torch.float64


def _undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    e = torch.tensor(pairs, dtype=torch.int64).T
    return torch.cat([e, e.flip(0)], 1)


def small_graph(weighted: bool = False) -> Graph:
    """A connected, non-regular, non-bipartite graph of 6 nodes."""
    ei = _undirected([(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 5), (5, 3), (1, 4)])
    w = None
    if weighted:
        half = torch.linspace(0.5, 2.0, ei.shape[1] // 2, dtype=D64)
        w = torch.cat([half, half])
    return Graph(ei, 6, w)


def cycle(n: int) -> Graph:
    return Graph(_undirected([(i, (i + 1) % n) for i in range(n)]), n)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_layer_equals_the_dense_normalised_adjacency_product(weighted):
    torch.manual_seed(0)
    g = small_graph(weighted)
    layer = GCNConv(3, 4).double()
    x = torch.randn(2, 6, 3, dtype=D64)
    a = g.dense_adjacency(D64) + torch.eye(6, dtype=D64)
    dinv = a.sum(1).rsqrt()
    ref = (dinv[:, None] * a * dinv[None]) @ x @ layer.linear.weight.T + layer.linear.bias
    torch.testing.assert_close(layer(x, g), ref, rtol=1e-12, atol=1e-12)


def test_sage_layer_equals_root_plus_dense_neighbour_mean():
    torch.manual_seed(1)
    g = small_graph()
    layer = SAGEConv(3, 2).double()
    x = torch.randn(6, 3, dtype=D64)
    a = g.dense_adjacency(D64)
    mean = (a / a.sum(1, keepdim=True)) @ x
    ref = layer.root(x) + layer.neighbour(mean)
    torch.testing.assert_close(layer(x, g), ref, rtol=1e-12, atol=1e-12)


def test_segment_softmax_sums_to_one_into_every_node():
    g = small_graph()
    scores = torch.randn(3, g.num_edges, dtype=D64)
    w = segment_softmax(scores, g.dst, g.num_nodes)
    sums = w.new_zeros(3, 6).index_add(-1, g.dst, w)
    torch.testing.assert_close(sums, torch.ones(3, 6, dtype=D64))
    # Node by node it is the ordinary softmax over the incoming edges.
    for i in range(6):
        into = g.dst == i
        torch.testing.assert_close(w[:, into], torch.softmax(scores[:, into], -1))


def _equivariance_cases():
    torch.manual_seed(2)
    return {
        "gcn": lambda g, x: GCNConv(3, 3).double()(x, g),
        "sage": lambda g, x: SAGEConv(3, 3).double()(x, g),
        "gat": lambda g, x: GATConv(3, 4, heads=2).double()(x, g),
        "diffusion_rw": lambda g, x: DiffusionField(g)(torch.tensor(0.0), x),
        "diffusion_attention": lambda g, x: DiffusionField(
            g, GraphAttention(3, 4, heads=2).double(), nonlinear=True
        )(torch.tensor(0.0), x),
        "vector_field": lambda g, x: GraphVectorField(
            [GCNConv(3, 5).double(), SAGEConv(5, 3).double()], g
        )(torch.tensor(0.0), x),
    }


@pytest.mark.parametrize("case", sorted(_equivariance_cases()))
def test_graph_vector_fields_are_permutation_equivariant(case):
    g = small_graph(weighted=True)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    x = torch.randn(2, 6, 3, dtype=D64)
    torch.manual_seed(7)
    out = _equivariance_cases()[case](g, x)
    torch.manual_seed(7)  # the same parameters for the permuted call
    out_perm = _equivariance_cases()[case](g.permute(perm), x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- GRAND


def _solve(field, x0, t1, solver=None, args=None, rtol=1e-10, atol=1e-12, **kw):
    sol = tn.solve(
        tn.ODETerm(field), solver or tn.Dopri5(), 0.0, t1, x0, args,
        saveat=tn.SaveAt(ts=torch.linspace(0, t1, 5, dtype=D64)),
        controller=tn.PIDController(rtol=rtol, atol=atol), **kw,
    )  # fmt: skip
    return sol.ys


def test_random_walk_diffusion_keeps_the_degree_weighted_mean_and_converges_to_it():
    g = small_graph(weighted=True)
    deg = g.in_degree(D64)
    x0 = torch.randn(1, 6, 3, dtype=D64)
    ys = _solve(DiffusionField(g), x0, 40.0)
    inv = (deg[:, None] * ys).sum(-2) / deg.sum()  # (T, 1, 3)
    torch.testing.assert_close(inv, inv[:1].expand_as(inv), rtol=0, atol=1e-9)
    # The kernel of I - D^{-1}W is the constants: X(t) -> the degree-weighted mean.
    torch.testing.assert_close(ys[-1], inv[0][:, None].expand_as(ys[-1]), rtol=0, atol=1e-8)
    # ... and not yet at t = 0: the test would pass trivially otherwise.
    assert (ys[0] - inv[0][:, None]).abs().max() > 0.1


def test_doubly_stochastic_diffusion_keeps_the_plain_mean():
    g = cycle(7)  # regular: D^{-1}A is symmetric and doubly stochastic
    x0 = torch.randn(1, 7, 2, dtype=D64)
    ys = _solve(DiffusionField(g), x0, 60.0)
    mean = x0.mean(-2)
    torch.testing.assert_close(ys.mean(-2), mean.expand(5, 1, 2), rtol=0, atol=1e-9)
    torch.testing.assert_close(ys[-1], mean[:, None].expand_as(ys[-1]), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "solver",
    [
        tn.Dopri5(),
        pytest.param(tn.Kvaerno5(newton_rtol=1e-12, newton_atol=1e-12), marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_linear_attention_diffusion_keeps_the_left_perron_vector_invariant(solver):
    torch.manual_seed(3)
    g = small_graph()
    att = GraphAttention(3, 4, heads=2).double()
    field = DiffusionField(g, att)  # linear: the weights are fixed at X(0), passed as args
    x0 = torch.randn(1, 6, 3, dtype=D64)
    with torch.no_grad():
        w = field.weights(x0)[0]
        a = torch.zeros(6, 6, dtype=D64).index_put((g.dst, g.src), w, accumulate=True)
        ys = _solve(field, x0, 40.0, solver=solver, args=w)
    torch.testing.assert_close(a.sum(1), torch.ones(6, dtype=D64))  # row-stochastic
    vals, vecs = torch.linalg.eig(a.T)
    pi = vecs[:, (vals - 1).abs().argmin()].real
    pi = pi / pi.sum()  # the kernel of (A - I)^T: pi^T X is conserved
    inv = torch.einsum("n,tbnc->tbc", pi, ys)
    torch.testing.assert_close(inv, inv[:1].expand_as(inv), rtol=0, atol=1e-8)
    torch.testing.assert_close(ys[-1], inv[0][:, None].expand_as(ys[-1]), rtol=0, atol=1e-7)


def test_constant_features_are_an_equilibrium_of_nonlinear_diffusion():
    g = small_graph()
    field = DiffusionField(g, GraphAttention(2, 4).double(), nonlinear=True)
    x = torch.tensor([1.5, -0.5], dtype=D64).expand(1, 6, 2)
    torch.testing.assert_close(field(torch.tensor(0.0), x), torch.zeros(1, 6, 2, dtype=D64))


@pytest.mark.parametrize("nonlinear", [False, True])
def test_implicit_grand_agrees_with_the_explicit_solve(nonlinear):
    torch.manual_seed(4)
    g = small_graph()
    common = dict(attention=True, nonlinear=nonlinear)
    explicit = GRAND(g, 3, 4, 2, 2.0, rtol=1e-10, atol=1e-12, **common).double()
    implicit = GRAND(
        g, 3, 4, 2, 2.0, solver=tn.Kvaerno5(newton_rtol=1e-11, newton_atol=1e-11),
        rtol=1e-9, atol=1e-11, **common,
    ).double()  # fmt: skip
    implicit.load_state_dict(explicit.state_dict())
    x = torch.randn(6, 3, dtype=D64)
    torch.testing.assert_close(implicit(x), explicit(x), rtol=1e-6, atol=1e-7)
    assert implicit.last_stats["num_jacobians"] >= 1


def test_implicit_euler_takes_large_steps_on_stiff_diffusion():
    # A star graph with heavy weights: eigenvalues of A - I down to about -2, diffused to
    # t = 200 with a fixed step of 20 (explicit Euler would blow up at steps above 1).
    star = Graph(_undirected([(0, i) for i in range(1, 8)]), 8)
    x0 = torch.randn(1, 8, 2, dtype=D64)
    sol = tn.solve(
        tn.ODETerm(DiffusionField(star)), tn.ImplicitEuler(), 0.0, 200.0, x0, dt0=20.0,
        controller=tn.ConstantStepSize(),
    )  # fmt: skip
    deg = star.in_degree(D64)
    mean = (deg[:, None] * x0[0]).sum(0) / deg.sum()
    torch.testing.assert_close(sol.ys[-1, 0], mean.expand(8, 2), rtol=0, atol=1e-6)


def test_grand_trains_on_the_karate_club_with_two_labels():
    pytest.importorskip("networkx")
    from torchnde.data.graphs import load_karate_club

    d = load_karate_club()
    torch.manual_seed(0)
    model = GRAND(d.graph, 34, 8, 2, 3.0, solver=tn.RK4(), dt0=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(d.x)[d.train_mask], d.y[d.train_mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(d.x).argmax(-1)[d.test_mask] == d.y[d.test_mask]).float().mean()
    assert acc > 0.7  # two labelled members; the split follows the communities


# --------------------------------------------------------------------------- GDE


def _gde_inputs(sequence: bool):
    torch.manual_seed(5)
    g0 = small_graph()
    g1 = cycle(6)
    graph = GraphSequence([g0, g1], [0.45]) if sequence else g0
    field = GraphVectorField([GCNConv(2, 3).double(), SAGEConv(3, 2).double()], graph)
    return field


@pytest.mark.parametrize("sequence", [False, True], ids=["static", "switching"])
@pytest.mark.parametrize(
    "adjoint",
    [tn.DirectAdjoint(), tn.BacksolveAdjoint()],
    ids=str,
)
def test_gde_gradients_match_finite_differences(sequence, adjoint):
    field = _gde_inputs(sequence)
    gde = GDE(field, 1.0, solver=tn.RK4(), dt0=0.1, adjoint=adjoint)
    weight = field.layers[0].linear.weight
    x = torch.randn(6, 2, dtype=D64, requires_grad=True)

    def f(x_, w_):
        out = torch.func.functional_call(gde, {"vector_field.layers.0.linear.weight": w_}, (x_,))
        return out

    w = weight.detach().clone().requires_grad_(True)
    if isinstance(adjoint, tn.BacksolveAdjoint):
        # The continuous adjoint is the gradient of the exact flow, not of the RK4 steps:
        # compare it with a tightly solved direct gradient instead of finite differences.
        tight = GDE(field, 1.0, solver=tn.Dopri5(), rtol=1e-10, atol=1e-12)
        b = GDE(field, 1.0, solver=tn.Dopri5(), rtol=1e-10, atol=1e-12, adjoint=adjoint)
        ga = torch.autograd.grad(tight(x).square().sum(), x)[0]
        gb = torch.autograd.grad(b(x).square().sum(), x)[0]
        torch.testing.assert_close(gb, ga, rtol=1e-6, atol=1e-8)
        return
    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7)


def test_a_switching_graph_is_solved_piecewise_with_steps_onto_the_switch():
    field = _gde_inputs(sequence=True)
    x = torch.randn(1, 6, 2, dtype=D64)
    gde = GDE(field, 1.0, rtol=1e-10, atol=1e-12)
    assert gde.config.controller.jump_ts is not None
    out = gde(x)
    graphs = field.graph.graphs

    def piece(g, y0, t0, t1):
        f = GraphVectorField(list(field.layers), g)
        return tn.solve(tn.ODETerm(f), tn.Tsit5(), t0, t1, y0,
                        controller=tn.PIDController(rtol=1e-10, atol=1e-12)).ys[-1]  # fmt: skip

    ref = piece(graphs[1], piece(graphs[0], x, 0.0, 0.45), 0.45, 1.0)
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-9)
    # Not the same as either graph alone.
    assert (out - piece(graphs[0], x, 0.0, 1.0)).abs().max() > 1e-3


def test_a_graph_given_as_a_function_of_time():
    field = _gde_inputs(sequence=False)
    g0, g1 = small_graph(), cycle(6)
    seq = GraphVectorField(list(field.layers), GraphSequence([g0, g1], [0.5]))
    fn = GraphVectorField(list(field.layers), lambda t: g0 if float(t) < 0.5 else g1)
    x = torch.randn(1, 6, 2, dtype=D64)
    for t in (0.2, 0.7):
        tt = torch.tensor(t, dtype=D64)
        torch.testing.assert_close(fn(tt, x), seq(tt, x))


def test_gde_saves_at_times_time_first_and_accepts_a_pyg_like_data_object():
    torch.manual_seed(6)
    g = small_graph()
    data = types.SimpleNamespace(edge_index=g.edge_index, num_nodes=6, x=torch.randn(6, 2))
    field = GraphVectorField([GATConv(2, 2), Pointwise(nn.Linear(2, 2))], data)
    gde = GDE(field, 1.0)
    ts = torch.linspace(0, 1, 4)
    assert gde(data.x, ts=ts).shape == (4, 6, 2)
    assert gde(data.x[None].expand(3, 6, 2), ts=ts).shape == (4, 3, 6, 2)
    assert gde(data.x).shape == (6, 2)
    assert as_graph(data).num_edges == g.num_edges


def test_static_node_features_are_concatenated_to_the_state():
    g = small_graph()
    static = torch.randn(6, 1, dtype=D64)
    layer = GCNConv(3, 2).double()
    field = GraphVectorField([layer], g, static=static)
    x = torch.randn(2, 6, 2, dtype=D64)
    ref = layer(torch.cat([x, static.expand(2, 6, 1)], -1), g)
    torch.testing.assert_close(field(torch.tensor(0.0), x), ref)


# --------------------------------------------------------------------------- FDGNN


def test_fdgnn_reservoir_is_contractive_and_its_fixed_point_unique():
    g = small_graph()
    res = GraphReservoir(3, 16, rho=0.9, generator=torch.Generator().manual_seed(0), tol=1e-12,
                         max_iters=500).double()  # fmt: skip
    u = torch.randn(1, 6, 3, dtype=D64)
    # The map is a contraction with constant rho on random pairs of states.
    x, y = torch.randn(2, 1, 6, 16, dtype=D64) * 3
    assert (res.step(x, u, g) - res.step(y, u, g)).norm() <= 0.9 * (x - y).norm() + 1e-12
    # Two very different starts reach the same fixed point.
    a = res(u, g)
    b = res(u, g, x0=torch.full((1, 6, 16), 5.0, dtype=D64))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(res.step(a, u, g), a, rtol=0, atol=1e-9)


def test_fdgnn_embeds_with_stacked_layers_and_fits_a_ridge_readout():
    g = small_graph()
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    fd = FDGNN(3, 5, num_layers=3, seed=1)
    z = fd.embed(x, g)
    assert z.shape == (6, 15)
    with pytest.raises(RuntimeError, match="not fitted"):
        fd(x, g)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    fd.fit(z, y)
    assert fd(x, g).shape == (6, 2)
    graph_level = FDGNN(3, 5, pool="mean").embed_graphs([(g, x), (cycle(6), x)])
    assert graph_level.shape == (2, 10)


def test_ridge_readout_solves_the_regularised_normal_equations():
    torch.manual_seed(8)
    h = torch.randn(30, 4, dtype=D64)
    y = torch.randn(30, 2, dtype=D64)
    lin = ridge_readout(h, y, ridge=0.1)
    ht = torch.cat([h, torch.ones(30, 1, dtype=D64)], 1)
    lhs = torch.cat([ht, 0.1**0.5 * torch.eye(5, dtype=D64)])
    coef = torch.linalg.lstsq(lhs, torch.cat([y, torch.zeros(5, 2, dtype=D64)])).solution
    torch.testing.assert_close(lin(h), ht @ coef)


# --------------------------------------------------------------------------- errors


def test_bad_graphs_and_features_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"`edge_index` must have shape \(2, E\).*got shape \(5, 2\)"
    ):
        Graph(torch.zeros(5, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="`edge_index` must hold integers, got dtype torch.float32"):
        Graph(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"node ids in \[0, 7\] but num_nodes=5"):
        Graph(torch.tensor([[0, 7], [1, 2]]), 5)
    with pytest.raises(ValueError, match=r"`edge_weight` must be a tensor of shape \(2,\)"):
        Graph(torch.tensor([[0, 1], [1, 0]]), 2, torch.ones(3))
    with pytest.raises(TypeError, match="`graph` must be a torchnde.graphs.Graph"):
        as_graph([1, 2])
    g = small_graph()
    with pytest.raises(ValueError, match=r"GCNConv: node features of shape \(5, 3\) do not fit"):
        GCNConv(3, 2)(torch.randn(5, 3), g)
    with pytest.raises(ValueError, match="2 graphs need 1 switch_times"):
        GraphSequence([g, g], [0.1, 0.2])
    with pytest.raises(ValueError, match="nonlinear diffusion recomputes the attention"):
        DiffusionField(g, nonlinear=True)
    with pytest.raises(ValueError, match=r"GDE: `x` must be node features"):
        GDE(GraphVectorField([GCNConv(2, 2)], g))(torch.randn(6))
    with pytest.raises(ValueError, match=r"`rho` must lie in \(0, 1\)"):
        GraphReservoir(2, 3, rho=1.5)
    with pytest.raises(ValueError, match="`out_features`=5 must be divisible by `heads`=2"):
        GATConv(2, 5, heads=2)


# --------------------------------------------------------------------------- experiments


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, overrides, keys",
    [
        (
            "graph-digits",
            ["--epochs", "2", "hidden=4", "fdgnn_units=4", "num_val=0"],
            ["grand_test_accuracy", "gde_test_accuracy", "gcn_test_accuracy"],
        ),
        (
            "graph-dynamics",
            [
                "--epochs",
                "1",
                "hidden=4",
                "num_nodes=8",
                "num_traj=3",
                "num_test=1",
                "num_times=8",
                "horizon=3",
            ],  # fmt: skip
            ["gde_forecast_mse", "static_baseline_mse"],
        ),
    ],
)
def test_each_graph_experiment_writes_its_metrics_at_a_tiny_size(name, overrides, keys, tmp_path):
    pytest.importorskip("sklearn")
    from torchnde.cli import main

    out = tmp_path / name
    assert main(["run", name, "--out", str(out), "--quiet", *overrides, "plot=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for k in keys:
        assert 0 <= metrics["eval"][k] < float("inf"), k
    assert metrics["headline"] and all(h["verdict"] for h in metrics["headline"])


@pytest.mark.parametrize("nonlinear", [False, True])
def test_grand_gradients_through_the_attention_match_finite_differences(nonlinear):
    torch.manual_seed(9)
    g = small_graph()
    model = GRAND(g, 2, 3, 2, 1.0, nonlinear=nonlinear, key_dim=2, solver=tn.RK4(), dt0=0.25)
    model = model.double()
    x = torch.randn(6, 2, dtype=D64, requires_grad=True)
    name = "field.attention.query.weight"
    w = dict(model.named_parameters())[name].detach().clone().requires_grad_(True)

    def f(x_, w_):
        return torch.func.functional_call(model, {name: w_}, (x_,))

    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7)
