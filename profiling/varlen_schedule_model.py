"""A model (not a measurement) of how evenly the Hopper varlen kernel's persistent grid shares a
ragged batch's work among its blocks, for the attention_varlen benchmark's batches.

Each work item (one 128-row query block of one (sequence, head) pair, VarlenTileScheduler's
order: highest query block first, pairs in order) costs `item_us + tiles * tile_us` (an empty item,
past its sequence's end, `skip_us`). Blocks take items by the kernel's static round-robin
(item i to block i % grid), or, for comparison, boustrophedon ("snake": every other round
reversed), greedy dynamic (the next item to the first free block) and greedy on items sorted by
cost. Prints each policy's efficiency: the mean load over the largest one (1.0 = no tail).

    python profiling/varlen_schedule_model.py [--grid 132] [--tile-us 1.7] [--item-us 2.5]
"""
from __future__ import annotations

import argparse
import heapq
import math
import random


def lengths(batch: int, seed: int = 0, lo: int = 128, hi: int = 4096) -> list[int]:
    """The benchmark's lengths (python/flashkernel/bench/ops/attention_breadth.py varlen_lengths)."""
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(batch)]


def item_costs(lens, heads, causal, block, tile_us, item_us, skip_us) -> list[float]:
    longest = max(lens)
    n_mblocks, pairs = math.ceil(longest / block), len(lens) * heads
    costs = []
    for item in range(n_mblocks * pairs):
        pair, m0 = item % pairs, (n_mblocks - 1 - item // pairs) * block
        n = lens[pair // heads]
        if m0 >= n:
            costs.append(skip_us)
            continue
        keys = min(n, m0 + block) if causal else n
        costs.append(item_us + math.ceil(keys / block) * tile_us)
    return costs


def efficiency(costs, grid, policy) -> float:
    load = [0.0] * grid
    if policy in ("static", "snake"):
        for i, c in enumerate(costs):
            j, r = divmod(i, grid)
            load[r if policy == "static" or j % 2 == 0 else grid - 1 - r] += c
    else:
        free = [(0.0, b) for b in range(grid)]
        for c in (sorted(costs, reverse=True) if policy == "sorted" else costs):
            t, b = heapq.heappop(free)
            heapq.heappush(free, (t + c, b))
        load = [t for t, _ in free]
    return sum(costs) / grid / max(load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=132, help="blocks of the persistent grid (one per SM)")
    ap.add_argument("--tile-us", type=float, default=1.7, help="one 128 x 128 key tile at d=128")
    ap.add_argument("--item-us", type=float, default=2.5, help="an item's start and epilogue")
    ap.add_argument("--skip-us", type=float, default=0.8, help="an empty item")
    args = ap.parse_args()
    print("batch heads causal  static  snake  dynamic  sorted")
    for batch, heads, causal in ((16, 16, False), (16, 16, True), (64, 16, True)):
        costs = item_costs(lengths(batch), heads, causal, 128, args.tile_us, args.item_us, args.skip_us)
        effs = [efficiency(costs, args.grid, p) for p in ("static", "snake", "dynamic", "sorted")]
        print(f"{batch:5d} {heads:5d} {int(causal):6d}  " + "  ".join(f"{e:5.2f}" for e in effs))


if __name__ == "__main__":
    main()
