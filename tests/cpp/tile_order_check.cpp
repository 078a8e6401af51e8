// Host check of SectionedOrder (kernels/common/tile_order.h), run by tests/test_tile_order.py.
// For every (per_unit, units, section) of a grid of small cases the index -> (rank, unit) map
// must equal the order built here loop by loop: ceil(units / section) sections of consecutive
// units, sizes as even as possible with the larger ones first, and inside a section rank 0 of
// each unit, then rank 1, and so on. That makes it a bijection onto the tiles in which a unit's
// ranks increase with the index (the deterministic backward's waits rely on it); both are
// checked on their own as well.
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
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
