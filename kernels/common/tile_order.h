// The order in which CTAs take their tiles: longest first across a section of heads whose
// streamed operands fit in L2 together. Shared by the host (launch) and device (decode).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <cute/config.hpp>

namespace flashgen {

// `units` independent units (a (head, batch entry[, split]) each), `per_unit` tiles each, rank
// 0 the longest. Tile indices go section by section, a section being `section` consecutive
// units; inside it, rank 0 of every unit, then rank 1, and so on. The CTAs running at the same
// time then share the operands of a few units in L2, and the longest-first order holds over
// the whole section rather than within one unit: under a causal mask, head after head of
// long-to-short tiles left a greedy schedule (the hardware's or an atomic counter's) 6-15%
// idle at the end of the standard sweep's shapes, one section 0-3% (a simulation in
// bench/NOTES.md). section = 1 is the plain unit-major order.
struct SectionedOrder {
  int per_unit;
  int units;
  int section;

  struct Coord {
    int rank;
    int unit;
  };

  CUTE_HOST_DEVICE Coord operator()(int index) const {
    const int span = section * per_unit;
    const int sec = index / span;
    const int first = sec * section;
    const int size = units - first < section ? units - first : section;  // the last may be short
    const int r = index - sec * span;
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

// Units per section: as many as fit in `budget` bytes of L2 at `unit_bytes` each, at least one.
inline int section_units(int64_t unit_bytes, int units, int64_t budget = int64_t(32) << 20) {
  if (units <= 1 || tile_sections_disabled()) { return 1; }
  const int64_t fit = unit_bytes <= 0 ? int64_t(units) : budget / unit_bytes;
  return fit < 1 ? 1 : fit > units ? units : int(fit);
}

}  // namespace flashgen
