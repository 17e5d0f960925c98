#!/usr/bin/env python3
"""Compute-balanced data-parallel steps against the round-robin split of
the same rows, in one run: for each real length set, the rows FFD packs
at L, shuffled (seed 0), each step's rows dealt to W ranks. A rank's cost
is the sum of its rows' costs (prepack's default cost model: a
Llama-3-8B shape, per_token * tokens + per_pair * sum l^2); a step takes
as long as its costliest rank. Printed: sum over steps of the costliest
rank / sum of the mean rank (the step-time overhead of imbalance; 1.00 is
perfect) and the worst single step's max/mean, for

  round robin   rank r takes rows r, r + W, ... of each step (PackedDataset
                without balance)
  balanced      prepack.balance_epoch: each step's rows split by cost
                (rows_per_rank rows a rank; 1 row a rank leaves nothing
                to balance within a step)
  window        the same after regrouping each 16 steps' rows by cost

    python bench/bench_balance.py [--ranks 8 64] [--rows-per-rank 1 4]
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
from prepack import _native  # noqa: E402
from prepack import balancing as B  # noqa: E402

sys.path.insert(0, HERE)
from length_sets import SETS as LENGTH_SETS  # noqa: E402

SETS = {  # name: (lengths, L)
    "openchat": (LENGTH_SETS["openchat"], 4096),
    "sharegpt": (LENGTH_SETS["sharegpt"], 4096),
    "squad": (LENGTH_SETS["squad"], 2048),
    "wikipedia": (LENGTH_SETS["wikipedia"], 2048),
    "corpus@8k": (LENGTH_SETS["corpus"], 8192),
    "corpus@32k": (LENGTH_SETS["corpus"], 32768),
}


def row_costs(lengths, L, model):
    """The rows FFD makes of these lengths (overlong split), and each
    row's cost, through the C planner."""
    lib = _native.library()
    lens = np.ascontiguousarray(lengths, dtype=np.uint32)
    opts = _native.PlanOptions(L, _native.enum_value("algo", "ffd"),
                               _native.enum_value("overlong", "split"),
                               0, 0, 0, None)
    plan = ctypes.c_void_p()
    diag = _native.Diag()
    rc = lib.prepack_plan_create(ctypes.byref(plan), lens.ctypes.data, len(lens),
                                 ctypes.byref(opts), ctypes.byref(diag))
    if rc:
        raise SystemExit(diag.message.decode())
    m = _native.CostModelStruct(model.per_token, model.per_pair)
    n = lib.prepack_plan_row_count(plan)
    out = np.array([lib.prepack_plan_row_cost(ctypes.byref(m), plan, r)
                    for r in range(n)])
    lib.prepack_plan_free(plan)
    return out


def overhead(costs, order, rank_of, world, per_rank):
    """sum of step maxima / sum of step means, and the worst step."""
    step = world * per_rank
    total_max = total_mean = 0.0
    worst = 1.0
    for s0 in range(0, len(order) - step + 1, step):  # whole steps only
        c = costs[order[s0:s0 + step]]
        loads = np.bincount(rank_of[s0:s0 + step], weights=c, minlength=world)
        total_max += loads.max()
        total_mean += loads.mean()
        worst = max(worst, loads.max() / loads.mean())
    return total_max / total_mean, worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--rows-per-rank", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    a = ap.parse_args()
    model = B.cost_model()
    print(f"cost model: per_token {model.per_token:.4g}, per_pair {model.per_pair:.4g} "
          f"(Llama-3-8B shape); overhead = sum of step max / sum of step mean "
          f"(worst step)")
    print(f"{'set':<11}{'L':>6}{'rows':>8}{'W':>4}{'r/rk':>5}"
          f"{'round robin':>20}{'balanced':>20}{'window 16':>20}{'ms':>8}")
    for name in a.sets:
        load, L = SETS[name]
        costs = row_costs(load(), L, model)
        order = np.random.default_rng(0).permutation(len(costs)).astype(np.uint64)
        for world in a.ranks:
            for per_rank in a.rows_per_rank:
                if len(costs) < 2 * world * per_rank:
                    continue
                step = world * per_rank
                rr = (np.arange(len(costs)) % step % world).astype(np.uint32)
                t0 = time.perf_counter()
                _, bal = B.balance_epoch(costs, world, per_rank, order)
                ms = (time.perf_counter() - t0) * 1000
                worder, win = B.balance_epoch(costs, world, per_rank, order, 16)
                cells = [overhead(costs, order, rr, world, per_rank),
                         overhead(costs, order, bal, world, per_rank),
                         overhead(costs, worder, win, world, per_rank)]
                text = "".join(f"{o:>11.4f} ({w:.3f})" for o, w in cells)
                print(f"{name:<11}{L:>6}{len(costs):>8}{world:>4}{per_rank:>5}"
                      f"{text}{ms:>8.1f}")


if __name__ == "__main__":
    main()
