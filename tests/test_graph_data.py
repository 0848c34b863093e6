"""Graph data: the karate club, the kNN graph of digits with few labels, random geometric
graphs and Kuramoto oscillators (against SciPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchnde.data.graphs import (
    generate_kuramoto,
    load_digits_knn,
    load_karate_club,
    random_geometric_graph,
)


def _edge_set(graph) -> set[tuple[int, int]]:
    return set(map(tuple, graph.edge_index.T.tolist()))


def _is_simple_undirected(graph) -> bool:
    edges = _edge_set(graph)
    return (
        len(edges) == graph.num_edges
        and all((j, i) in edges for i, j in edges)
        and all(i != j for i, j in edges)
    )


def test_karate_club_is_zacharys_graph_with_the_two_clubs():
    pytest.importorskip("networkx")
    d = load_karate_club()
    assert d.graph.num_nodes == 34 and d.graph.num_edges == 2 * 78
    assert _is_simple_undirected(d.graph)
    assert int(d.y.sum()) == 17 and d.num_classes == 2  # 17 members left with the officer
    assert d.y[0] == 0 and d.y[33] == 1 and d.train_mask.sum() == 2
    assert not (d.train_mask & d.test_mask).any() and (d.train_mask | d.test_mask).all()


@pytest.mark.slow
def test_digits_knn_graph_joins_each_image_to_its_nearest_neighbours():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    d = load_digits_knn(k=5, labels_per_class=10, num_val=100, seed=3)
    x = load_digits().data / 16.0
    assert d.graph.num_nodes == 1797 and _is_simple_undirected(d.graph)
    torch.testing.assert_close(d.x, torch.tensor(x, dtype=torch.float32))
    assert (d.graph.in_degree(weighted=False) >= 5).all()
    edges = _edge_set(d.graph)
    rng = np.random.default_rng(0)
    for i in rng.choice(1797, 20, replace=False):
        dist = ((x - x[i]) ** 2).sum(1)
        dist[i] = np.inf
        for j in np.argsort(dist, kind="stable")[:4]:  # the 5th may tie
            assert (int(j), int(i)) in edges
    # 10 labels per class, disjoint masks covering every node, the rest for testing.
    assert torch.bincount(d.y[d.train_mask]).tolist() == [10] * 10
    assert int(d.val_mask.sum()) == 100 and int(d.test_mask.sum()) == 1797 - 200
    total = d.train_mask.int() + d.val_mask.int() + d.test_mask.int()
    assert (total == 1).all()
    again = load_digits_knn(k=5, labels_per_class=10, num_val=100, seed=3)
    assert torch.equal(again.train_mask, d.train_mask)
    other = load_digits_knn(k=5, labels_per_class=10, num_val=100, seed=4)
    assert not torch.equal(other.train_mask, d.train_mask)


def test_digits_knn_rejects_a_bad_k_and_too_many_labels():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="`k` must be a positive int, got 0"):
        load_digits_knn(k=0)
    with pytest.raises(ValueError, match="`labels_per_class`=500 but class 0 has only"):
        load_digits_knn(k=2, labels_per_class=500)


def test_random_geometric_graph_joins_exactly_the_close_pairs():
    g, pos = random_geometric_graph(30, 0.3, seed=2)
    d = torch.cdist(pos, pos)
    expected = {(i, j) for i in range(30) for j in range(30) if i != j and d[i, j] < 0.3}
    assert _edge_set(g) == expected
    g2, pos2 = random_geometric_graph(30, 0.3, seed=2)
    assert torch.equal(pos, pos2) and torch.equal(g.edge_index, g2.edge_index)


def test_kuramoto_trajectories_match_scipy():
    from scipy.integrate import solve_ivp

    data = generate_kuramoto(num_nodes=8, num_traj=2, num_times=11, t1=2.0, radius=0.5, seed=1)
    g = data.graph
    omega = data.static[:, 0].double().numpy()
    src, dst = g.src.numpy(), g.dst.numpy()
    deg = np.bincount(dst, minlength=8)
    coupling = 2.0

    def rhs(t, th):
        out = omega.copy()
        np.add.at(out, dst, coupling * np.sin(th[src] - th[dst]) / deg[dst])
        return out

    s0 = data.states[:, 0].double().numpy()
    theta0 = np.arctan2(s0[..., 1], s0[..., 0])
    for k in range(2):
        ref = solve_ivp(rhs, (0, 2.0), theta0[k], t_eval=data.t.double().numpy(),
                        method="DOP853", rtol=1e-11, atol=1e-12).y.T  # fmt: skip
        expected = np.stack([np.cos(ref), np.sin(ref)], -1)
        np.testing.assert_allclose(data.states[k].numpy(), expected, atol=1e-5)
    assert data.states.shape == (2, 11, 8, 2)
    norms = data.states.square().sum(-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
