"""Compute-balanced data-parallel steps: the cost model, prepack.balance,
balance_epoch and PackedDataset(balance="compute"): equal counts, every
row exactly once an epoch for any world size and resume point, the same
answer every time, and a real split that beats round robin."""
import os

import numpy as np
import pytest

import prepack
from prepack import balancing as B
from conftest import ROOT

LENGTHS = os.path.join(ROOT, "fixtures", "lengths")
if not __import__("os").environ.get("PREPACK_LIBRARY"):
    pytest.skip("needs libprepack (PREPACK_LIBRARY; sanitizer builds cannot be "
                "loaded into Python)", allow_module_level=True)


def test_cost_model_matches_the_formula():
    m = B.cost_model(hidden_size=64, intermediate_size=256, num_heads=4,
                     num_kv_heads=2, num_layers=3)
    kv = 64 * 2 / 4
    assert m.per_token == pytest.approx(2 * 3 * (2 * 64 * 64 + 2 * 64 * kv + 3 * 64 * 256))
    assert m.per_pair == pytest.approx(2 * 3 * 2 * 64 * 0.5)
    full = B.cost_model(hidden_size=64, intermediate_size=0, num_heads=4,
                        num_kv_heads=0, num_layers=3, bidirectional=True)
    assert full.per_token == pytest.approx(2 * 3 * (2 * 64 * 64 + 2 * 64 * 64 + 2 * 64 * 256))
    assert full.per_pair == pytest.approx(2 * 3 * 2 * 64)
    with pytest.raises(ValueError):
        B.cost_model(hidden_size=0)
    with pytest.raises(ValueError):
        B.cost_model(num_heads=8, num_kv_heads=16)


def test_costs_of_rows_lengths_and_ints():
    m = B.CostModel(1.0, 0.5)
    rows = prepack.pack([[1] * 3, [2] * 5, [3] * 2], max_seq_len=8)
    got = B.costs(rows, m)
    want = [sum(l + 0.5 * l * l for l in np.diff(r["cu_seqlens"])) for r in rows]
    assert got.tolist() == want
    assert B.costs([[3, 5], [2]], m).tolist() == [8 + 0.5 * 34, 2 + 0.5 * 4]
    assert B.costs([4, 1], m).tolist() == [4 + 8.0, 1.5]
    with pytest.raises(ValueError):
        B.costs([[-1]], m)


@pytest.mark.parametrize("world", [1, 2, 3, 7, 8, 64])
def test_balance_counts_coverage_determinism(world):
    rng = np.random.default_rng(world)
    for n in [0, 1, world - 1, world, 5 * world + 3, 300]:
        costs = rng.pareto(1.5, n) * 100
        parts = prepack.balance(None, world, item_costs=costs) if n else \
            prepack.balance([], world)
        assert len(parts) == world
        flat = sorted(i for p in parts for i in p)
        assert flat == list(range(n))
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        assert parts == prepack.balance(None, world, item_costs=costs) if n else True


def test_balance_beats_round_robin_and_is_near_optimal_when_small():
    rng = np.random.default_rng(0)
    worse = 0
    for trial in range(200):
        world, per = 4, 3
        costs = rng.pareto(1.2, world * per) + 1
        parts = prepack.balance(None, world, item_costs=costs)
        best = max(costs[p].sum() for p in parts)
        rr = max(costs[r::world].sum() for r in range(world))
        worse += best > rr + 1e-9
        # exhaustive for 2 bins of 3: the heuristic within 10% of optimal
        c6 = costs[:6]
        import itertools
        opt = min(max(c6[list(a)].sum(), c6[[i for i in range(6) if i not in a]].sum())
                  for a in itertools.combinations(range(6), 3))
        got = max(c6[p].sum() for p in prepack.balance(None, 2, item_costs=c6))
        assert got <= opt * 1.10 + 1e-9, (trial, got, opt)
    assert worse == 0


def test_bad_costs_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        prepack.balance(None, 2, item_costs=[1.0, -1.0])
    with pytest.raises(ValueError, match="non-negative"):
        prepack.balance(None, 2, item_costs=[1.0, float("nan")])
    with pytest.raises(ValueError):
        prepack.balance([1, 2], 0)


@pytest.mark.parametrize("world,per,window", [(1, 1, 1), (2, 3, 1), (3, 1, 4),
                                              (7, 2, 3), (8, 4, 1), (64, 1, 16),
                                              (64, 4, 2)])
def test_balance_epoch_every_row_once_equal_steps(world, per, window):
    rng = np.random.default_rng(world * 100 + per)
    n = 1000 + world
    costs = rng.pareto(1.5, n)
    order = rng.permutation(n)
    out, rank_of = B.balance_epoch(costs, world, per, order, window)
    assert sorted(out.tolist()) == list(range(n))
    if window == 1:
        assert out.tolist() == order.tolist()
    step = world * per
    for s0 in range(0, n, step):
        counts = np.bincount(rank_of[s0:s0 + step], minlength=world)
        assert counts.max() - counts.min() <= 1
        if s0 + step <= n:
            assert (counts == per).all()
    again = B.balance_epoch(costs, world, per, order, window)
    assert (again[0] == out).all() and (again[1] == rank_of).all()


def test_real_lengths_balance_well(tmp_path):
    """ShareGPT's lengths packed at 4096, 64 ranks x 4 rows a step: the
    step-time overhead of imbalance (sum of step maxima / sum of means) at
    most 1.02 balanced, above it round robin."""
    lengths = np.loadtxt(os.path.join(LENGTHS, "sharegpt_opt_first_turn_total_lengths.txt"),
                         dtype=np.int64)
    rows = prepack.pack([np.zeros(int(l), np.uint32) for l in lengths if l > 0], 4096,
                        overlong="split")
    costs = B.costs(rows)
    world, per = 64, 4
    order = np.random.default_rng(0).permutation(len(costs))

    def overhead(order, rank_of):
        step, mx, mean = world * per, 0.0, 0.0
        for s0 in range(0, len(order) - step + 1, step):
            loads = np.bincount(rank_of[s0:s0 + step], weights=costs[order[s0:s0 + step]],
                                minlength=world)
            mx += loads.max()
            mean += loads.mean()
        return mx / mean

    rr = (np.arange(len(costs)) % world).astype(np.uint32)
    balanced = B.balance_epoch(costs, world, per, order)
    assert overhead(order, rr) > 1.02
    assert overhead(*balanced) <= 1.02


@pytest.fixture(scope="module")
def costs_of_set(shard_set):
    return B.set_costs(shard_set)


def test_set_costs_both_backends(shard_set, costs_of_set):
    shards = prepack.ShardSet(shard_set, backend="python")
    want = B.costs([shards[i] for i in range(len(shards))])
    assert np.allclose(costs_of_set, want, rtol=1e-12)
    assert np.allclose(B.set_costs(shard_set, backend="python"), want, rtol=1e-12)


@pytest.mark.parametrize("world", list(range(1, 9)) + [16, 33, 64])
def test_packed_dataset_ranks_cover_every_row_once(shard_set, costs_of_set, world):
    from prepack.torch import PackedDataset
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            ds = PackedDataset(shard_set, batch_rows=2, rank=rank, world_size=world,
                               balance="compute", micro_batches=2,
                               row_costs=costs_of_set, seed=3)
            ds.set_epoch(epoch)
            seen.extend(ds.rank_rows().tolist())
        assert sorted(seen) == list(range(len(costs_of_set)))


def test_packed_dataset_resumes_at_any_batch(shard_set, costs_of_set):
    import torch
    from prepack.torch import PackedDataset

    def make():
        return PackedDataset(shard_set, batch_rows=3, rank=1, world_size=4,
                             balance="compute", micro_batches=2, balance_window=2,
                             row_costs=costs_of_set, seed=9)

    full = list(make())
    for k in range(len(full) + 1):  # every resume point
        first = make()
        state = first.state_dict(k)
        resumed = make()
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert len(rest) == len(full) - k
        for a, b in zip(rest, full[k:]):
            assert torch.equal(a["input_ids"], b["input_ids"])
    plain = PackedDataset(shard_set, batch_rows=3, rank=1, world_size=4)
    with pytest.raises(ValueError, match="balance"):
        plain.load_state_dict(make().state_dict(1))
    with pytest.raises(ValueError, match="balance"):
        make().load_state_dict(plain.state_dict(1))


def test_packed_dataset_balances_steps(shard_set, costs_of_set):
    """Each step's rank loads: balanced no worse than round robin overall."""
    from prepack.torch import PackedDataset
    world, per = 4, 2

    def step_max_sum(balance):
        shares = []
        for rank in range(world):
            ds = PackedDataset(shard_set, batch_rows=1, rank=rank, world_size=world,
                               balance=balance, micro_batches=per,
                               row_costs=costs_of_set if balance else None)
            shares.append(ds.rank_rows())
        steps = min(len(s) for s in shares) // per
        return sum(max(costs_of_set[s[t * per:(t + 1) * per]].sum() for s in shares)
                   for t in range(steps))

    assert step_max_sum("compute") < step_max_sum(None)


def reference_split(costs, world):
    """docs/BALANCE.md's split written plainly (the same additions in the
    same order as the C code, so the answer matches exactly): LPT
    costliest first, ties by index, each item to the cheapest rank with
    room (ties by rank); then up to 4 x world swaps between the costliest
    rank (the first on a tie) and another that lower the larger of the
    two loads the most (the first such pair, items in index order)."""
    n = len(costs)
    base, extra = divmod(n, world)
    load, count, rank, at_extra = [0.0] * world, [0] * world, [0] * n, 0
    for i in sorted(range(n), key=lambda i: (-costs[i], i)):
        to = min((r for r in range(world) if count[r] < base
                  or (count[r] == base and at_extra < extra)),
                 key=lambda r: (load[r], r))
        at_extra += count[to] == base
        count[to] += 1
        load[to] += costs[i]
        rank[i] = to
    for _ in range(4 * world if n <= 4096 else 0):
        hi = max(range(world), key=lambda r: (load[r], -r))
        best, pair = load[hi], None
        for i in (i for i in range(n) if rank[i] == hi):
            for j in range(n):
                d = costs[i] - costs[j]
                if rank[j] == hi or d <= 0:
                    continue
                worse = max(load[hi] - d, load[rank[j]] + d)
                if worse < best:
                    best, pair = worse, (i, j)
        if pair is None:
            break
        i, j = pair
        d = costs[i] - costs[j]
        load[hi] -= d
        load[rank[j]] += d
        rank[i], rank[j] = rank[j], hi
    return [[i for i in range(n) if rank[i] == r] for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 5, 8])
def test_balance_is_the_documented_split(world):
    """Exactly the reference's split on heavy-tailed costs and on small
    integers (ties everywhere: the order of ties and a swap that only
    equals the maximum would show)."""
    rng = np.random.default_rng(100 + world)
    for n in [1, world, 2 * world + 1, 7 * world, 60]:
        for costs in (rng.pareto(1.2, n) + 1,
                      rng.integers(1, 7, n).astype(np.float64)):
            got = prepack.balance(None, world, item_costs=costs)
            assert got == reference_split(costs.tolist(), world), (n, costs)


def test_balance_pinned():
    """Worked by hand: the count limit, and a swap that reaches the
    optimum (17, 14, 16 after LPT; 16, 15, 16 after swapping 11 and 10)."""
    assert prepack.balance(None, 2, item_costs=[10, 1, 1, 1]) == [[0, 3], [1, 2]]
    assert prepack.balance(None, 3, item_costs=[10, 7, 11, 3, 3, 9, 4]) == \
        [[0, 3, 4], [2, 6], [1, 5]]
