// The order in which CTAs take their tiles: longest first across a section of heads whose
// streamed operands fit in L2 together. Shared by the host (launch) and device (decode).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

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

// FLASHGEN_TILE_ORDER=unit turns sections off (a tuning knob for the benchmarks; read once).
inline bool tile_sections_disabled() {
  static const bool off = [] {
    const char* v = std::getenv("FLASHGEN_TILE_ORDER");
    return v != nullptr && std::strcmp(v, "unit") == 0;
  }();
  return off;
}

// Units per section: as many as fit in `budget` bytes of L2 at `unit_bytes` each, but at least
// `min_units` (and one).
inline int section_units(int64_t unit_bytes, int units, int64_t budget = int64_t(32) << 20, int min_units = 1) {
  if (units <= 1 || tile_sections_disabled()) { return 1; }
  int64_t fit = unit_bytes <= 0 ? int64_t(units) : budget / unit_bytes;
  fit = fit < min_units ? min_units : fit;
  return fit < 1 ? 1 : fit > units ? units : int(fit);
}

}  // namespace flashgen
