// Host check of SectionedOrder (kernels/common/tile_order.h), run by tests/test_tile_order.py.
// For every (per_unit, units, section) of a grid of small cases the index -> (rank, unit) map
// must equal the order built here loop by loop: ceil(units / section) sections of consecutive
// units, sizes as even as possible with the larger ones first, and inside a section rank 0 of
// each unit, then rank 1, and so on. That makes it a bijection onto the tiles in which a unit's
// ranks increase with the index (the deterministic backward's waits rely on it); both are
// checked on their own as well. Then the section search of the backward (searched_section):
// its simulated makespan against a plain one over the order built here, and its choices at the
// standard sweep's causal shapes against tools/sim_tile_order.py's figures.
#include <cstdio>
#include <vector>

#include "common/tile_order.h"

int main() {
  int failures = 0, cases = 0;
  for (int per_unit = 1; per_unit <= 9; ++per_unit) {
    for (int units = 1; units <= 70; ++units) {
      for (int section = 1; section <= units + 1; ++section) {
        ++cases;
        std::vector<flashgen::SectionedOrder::Coord> expected;
        const int sections = (units + section - 1) / section;
        for (int s = 0, first = 0; s < sections; ++s) {
          const int size = units / sections + (s < units % sections ? 1 : 0);
          for (int rank = 0; rank < per_unit; ++rank) {
            for (int u = first; u < first + size; ++u) { expected.push_back({rank, u}); }
          }
          first += size;
        }
        const flashgen::SectionedOrder order{per_unit, units, section};
        std::vector<int> seen(per_unit * units, 0), last_rank(units, -1);
        for (int index = 0; index < per_unit * units; ++index) {
          const auto c = order(index);
          const char* error = nullptr;
          if (c.rank != expected[index].rank || c.unit != expected[index].unit) { error = "not the expected tile"; }
          if (c.rank < 0 || c.rank >= per_unit || c.unit < 0 || c.unit >= units) {
            error = "out of range";
          } else {
            if (seen[c.rank * units + c.unit]++) { error = "repeated tile"; }
            if (c.rank != last_rank[c.unit] + 1) { error = "a unit's ranks out of order"; }
            last_rank[c.unit] = c.rank;
          }
          if (error != nullptr && failures++ < 10) {
            std::printf("FAIL %s: per_unit %d units %d section %d index %d -> rank %d unit %d\n", error, per_unit,
                        units, section, index, c.rank, c.unit);
          }
        }
      }
    }
  }
  // sectioned_makespan against tiles handed one by one to the SM that is free first (ties: the
  // lowest index), over the loop-built order.
  for (int per_unit = 1; per_unit <= 12; per_unit += 3) {
    for (int units = 1; units <= 40; units += 3) {
      for (int section = 1; section <= units; section += 2) {
        for (int sms : {1, 5, 16}) {
          ++cases;
          std::vector<int64_t> cost(per_unit);
          for (int r = 0; r < per_unit; ++r) { cost[r] = 3 * (per_unit - r) + (r * 7) % 5; }
          std::vector<int64_t> free_at(sms, 0);
          int64_t end = 0;
          const int sections = (units + section - 1) / section;
          for (int s = 0, first = 0; s < sections; ++s) {
            const int size = units / sections + (s < units % sections ? 1 : 0);
            for (int rank = 0; rank < per_unit; ++rank) {
              for (int u = first; u < first + size; ++u) {
                int k = 0;
                for (int i = 1; i < sms; ++i) { k = free_at[i] < free_at[k] ? i : k; }
                free_at[k] += cost[rank];
                end = free_at[k] > end ? free_at[k] : end;
              }
            }
            first += size;
          }
          const int64_t got = flashgen::sectioned_makespan(cost, units, section, sms);
          if (got != end && failures++ < 10) {
            std::printf("FAIL makespan: per_unit %d units %d section %d sms %d: %lld, expected %lld\n", per_unit,
                        units, section, sms, (long long)got, (long long)end);
          }
        }
      }
    }
  }
  // The standard sweep's causal shapes on 132 SMs (b * s = 16k, h * d = 2048; key block n of
  // block_n keys sees s / block_m - n * block_n / block_m query blocks, plus 2 steps): the rule's
  // section, the searched one and its makespan over the ideal, as tools/sim_tile_order.py has
  // them (bench/NOTES.md, session 24).
  struct Shape {
    int seqlen, block_m, block_n, units, rule, searched;
    double ratio;
  };
  for (const Shape& c : {Shape{2048, 64, 128, 128, 17, 13, 1.0109}, Shape{8192, 64, 128, 32, 5, 4, 1.0005},
                         Shape{4096, 64, 128, 64, 9, 9, 1.0018}, Shape{2048, 128, 128, 256, 31, 23, 1.0036},
                         Shape{4096, 64, 64, 32, 5, 4, 1.0014}}) {
    ++cases;
    std::vector<int64_t> cost(c.seqlen / c.block_n);
    int64_t total = 0;
    for (int n = 0; n < int(cost.size()); ++n) {
      cost[n] = c.seqlen / c.block_m - n * c.block_n / c.block_m + 2;
      total += cost[n];
    }
    const int got = flashgen::searched_section(cost, c.units, c.rule, 132);
    const double ratio = double(flashgen::sectioned_makespan(cost, c.units, got, 132)) / (double(total) * c.units / 132);
    if ((got != c.searched || ratio > c.ratio + 5e-5 || ratio < c.ratio - 5e-5) && failures++ < 10) {
      std::printf("FAIL search: seqlen %d block_m %d units %d: section %d (makespan %.4f of ideal), expected %d (%.4f)\n",
                  c.seqlen, c.block_m, c.units, got, ratio, c.searched, c.ratio);
    }
  }
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
