"""Simulated makespan of the backward's key-block order under a causal mask (SectionedOrder,
kernels/common/tile_order.h): CTAs taken in index order by the first free of `--sms` slots, a key
block n costing (query blocks it sees + 2) steps. Prints makespan / ideal for the standard
sweep's shapes (b * s = 16k, h * d = 2048) with the sections of equal size but a short last one
(before session 20), as even as possible, with at least 2 * SMs / n_blocks units a section (the
size rule, session 21), the size that searched_section (kernels/common/tile_order.h, session 24)
picks within 3/4 .. 3/2 of the rule's, and the unit-major order.

    python3 tools/sim_tile_order.py [--sms 132]
"""

import argparse
import heapq
import math

# (head dim, block_m, block_n) of the SM80 backward tiles (kernels/sm80/sm80_bwd_tile.h)
TILES = ((64, 128, 128), (128, 64, 128), (256, 64, 64))
L2_BUDGET = 32 << 20


def order(per_unit, sizes):
    first = 0
    for size in sizes:
        for rank in range(per_unit):
            for _ in range(first, first + size):
                yield rank
        first += size


def makespan(lengths, ranks, sms):
    free = [0.0] * sms
    end = 0.0
    for rank in ranks:
        t = heapq.heappop(free) + lengths[rank]
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def equal_sizes(units, section):
    return [section] * (units // section) + ([units % section] if units % section else [])


def even_sizes(units, section):
    n = math.ceil(units / section)
    return [units // n + (1 if i < units % n else 0) for i in range(n)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sms", type=int, default=132)
    sms = parser.parse_args().sms
    print("hdim seqlen units | equal+short | even | even, min units | searched (size) | unit-major")
    for hd, bm, bn in TILES:
        for s in (2048, 4096, 8192, 16384):
            units, nb = (16384 // s) * (2048 // hd), s // bn
            lengths = [s // bm - (n * bn) // bm + 2 for n in range(nb)]
            unit_bytes = s * (2 * hd * 2 + 4 * hd + 8)
            fit = max(1, min(units, L2_BUDGET // unit_bytes))
            fit_min = max(1, min(units, max(fit, math.ceil(2 * sms / nb))))
            ideal = sum(lengths) * units / sms
            span = {size: makespan(lengths, order(nb, even_sizes(units, size)), sms)
                    for size in range(max(1, fit_min * 3 // 4), min(units, fit_min * 3 // 2) + 1)}
            searched = min(span, key=lambda size: (span[size], size != fit_min, size))
            cols = [equal_sizes(units, fit), even_sizes(units, fit), even_sizes(units, fit_min)]
            cells = [f"{makespan(lengths, order(nb, c), sms) / ideal:.4f}" for c in cols]
            cells.append(f"{span[searched] / ideal:.4f} ({searched})")
            cells.append(f"{makespan(lengths, order(nb, [1] * units), sms) / ideal:.4f}")
            print(f"{hd:4} {s:6} {units:5} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
