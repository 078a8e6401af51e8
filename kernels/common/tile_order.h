// The order in which CTAs take their tiles: longest first across a section of heads whose
// streamed operands fit in L2 together. Shared by the host (launch) and device (decode).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <queue>
#include <vector>

#include <cute/config.hpp>

namespace flashgen {

// `units` independent units (a (head, batch entry[, split]) each), `per_unit` tiles each, rank
// 0 the longest. Tile indices go section by section, a section being consecutive units, at
// most `section` of them; inside it, rank 0 of every unit, then rank 1, and so on. The CTAs
// running at the same time then share the operands of a few units in L2, and the longest-first
// order holds over the whole section rather than within one unit: under a causal mask, head
// after head of long-to-short tiles left a greedy schedule (the hardware's or an atomic
// counter's) 6-15% idle at the end of the standard sweep's shapes, one section 0-3% (a
// simulation in bench/NOTES.md). The sections are as even as the count allows (sizes differ by
// at most one, the larger ones first): a short last section starts its longest tiles when
// little other work is left (64 units in sections of 7 left one unit for last, and the
// simulated schedule 10% idle; bench/NOTES.md, session 20). section = 1 is the plain unit-major
// order. Within a unit, ranks keep increasing with the index (the deterministic backward's
// waits rely on it).
struct SectionedOrder {
  int per_unit;
  int units;
  int section;

  struct Coord {
    int rank;
    int unit;
  };

  CUTE_HOST_DEVICE Coord operator()(int index) const {
    const int sections = (units + section - 1) / section;
    const int small = units / sections;                // units of a smaller section
    const int large_sections = units - small * sections;  // those with small + 1 units come first
    const int large_span = (small + 1) * per_unit;
    int first, size, r;
    if (index < large_sections * large_span) {
      const int sec = index / large_span;
      first = sec * (small + 1);
      size = small + 1;
      r = index - sec * large_span;
    } else {
      const int rest = index - large_sections * large_span;
      const int sec = rest / (small * per_unit);
      first = large_sections * (small + 1) + sec * small;
      size = small;
      r = rest - sec * small * per_unit;
    }
    const int rank = r / size;
    return {rank, first + (r - rank * size)};
  }
};

// Whether query blocks (forward) or key blocks (backward) see different numbers of blocks on the
// other side, so that longest-first sections pay: keys bounded on the right only (causal, or a
// window with no left bound). Tiles of one length keep the unit-major order, whose fewer heads
// in flight share L2 better.
inline bool tile_lengths_vary(bool is_causal, int window_left, int window_right) {
  return is_causal || (window_right >= 0 && window_left < 0);
}

// FLASHGEN_TILE_ORDER (a tuning knob for the benchmarks; read once): unit turns sections off,
// rule keeps the section size rule's choice without the backward's search (searched_section);
// anything else (search, the default) searches.
inline const char* tile_order_setting() {
  static const char* v = std::getenv("FLASHGEN_TILE_ORDER");
  return v != nullptr ? v : "";
}
inline bool tile_sections_disabled() { return std::strcmp(tile_order_setting(), "unit") == 0; }
inline bool tile_section_search_disabled() { return std::strcmp(tile_order_setting(), "rule") == 0; }

// Units per section: as many as fit in `budget` bytes of L2 at `unit_bytes` each, but at least
// `min_units` (and one).
inline int section_units(int64_t unit_bytes, int units, int64_t budget = int64_t(32) << 20, int min_units = 1) {
  if (units <= 1 || tile_sections_disabled()) { return 1; }
  int64_t fit = unit_bytes <= 0 ? int64_t(units) : budget / unit_bytes;
  fit = fit < min_units ? min_units : fit;
  return fit < 1 ? 1 : fit > units ? units : int(fit);
}

// The makespan, in steps, of the tiles of SectionedOrder{cost.size(), units, section} when each
// goes in index order to the first free of `sms` SMs (a greedy scheduler, as the hardware's is
// for a grid of one CTA per tile and SM), a tile of rank r taking cost[r] steps.
inline int64_t sectioned_makespan(std::vector<int64_t> const& cost, int units, int section, int sms) {
  const int per_unit = int(cost.size());
  if (per_unit == 0 || units <= 0 || sms <= 0) { return 0; }
  const SectionedOrder order{per_unit, units, section};
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<int64_t>> free_at;
  for (int i = 0; i < sms; ++i) { free_at.push(0); }
  int64_t end = 0;
  for (int index = 0; index < per_unit * units; ++index) {
    const int64_t done = free_at.top() + cost[order(index).rank];
    free_at.pop();
    free_at.push(done);
    end = done > end ? done : end;
  }
  return end;
}

// The section size for tiles of unequal cost (rank 0 the longest): the size rule's `section`
// (section_units) unless a size within 3/4 .. 3/2 of it gives a strictly shorter simulated
// makespan (sectioned_makespan; the smallest such size of the shortest). Under a causal mask the
// rule's size can leave the last SMs a long tile to finish alone: at head dim 128 2k (128 units
// of 16 key blocks, 132 SMs) 17 units a section simulate to 1.018 of the ideal makespan, 13 to
// 1.011; at 128 8k 5 units 1.012, 4 1.0005 (tools/sim_tile_order.py, bench/NOTES.md session 24).
// The size stays near the rule's, whose bound keeps a section's operands within L2. Up to 2^18
// tiles (the search then takes ~20 ms of host time: callers memoize it per shape);
// FLASHGEN_TILE_ORDER=rule keeps the rule's.
inline int searched_section(std::vector<int64_t> const& cost, int units, int section, int sms) {
  if (tile_section_search_disabled() || units <= 1 || sms <= 0 || cost.size() <= 1 ||
      int64_t(cost.size()) * units > (int64_t(1) << 18)) {
    return section;
  }
  int best = section;
  int64_t best_span = sectioned_makespan(cost, units, section, sms);
  const int lo = section * 3 / 4 > 1 ? section * 3 / 4 : 1;
  const int hi = section * 3 / 2 < units ? section * 3 / 2 : units;
  int last_sections = -1;
  for (int size = lo; size <= hi; ++size) {
    const int sections = (units + size - 1) / size;  // sizes with the same count make the same order
    if (sections == last_sections) { continue; }
    last_sections = sections;
    const int64_t span = sectioned_makespan(cost, units, size, sms);
    if (span < best_span) {
      best_span = span;
      best = size;
    }
  }
  return best;
}

}  // namespace flashgen
