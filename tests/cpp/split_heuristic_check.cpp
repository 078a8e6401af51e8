// Host-only driver for tests/test_split_heuristic.py: reads "ctas n_blocks wave" triples from
// stdin and prints choose_decode_splits' answer for each, one per line.
#include <cstdint>
#include <iostream>

#include "api/split_heuristic.h"

int main() {
  int64_t ctas = 0, wave = 0;
  int n_blocks = 0;
  while (std::cin >> ctas >> n_blocks >> wave) {
    std::cout << flashgen::choose_decode_splits(ctas, n_blocks, wave) << "\n";
  }
  return 0;
}
