// Host-only driver for tests/test_split_heuristic.py: reads "kv_e4m3 head_dim streams
// compute_capability page_size" lines from stdin and prints plan_takes_tma's answer (0 / 1) for
// each, one per line.
#include <iostream>

#include "sm80/sm80_decode_tile.h"

int main() {
  int kv_e4m3 = 0, head_dim = 0, cc = 0, page_size = 0;
  long long streams = 0;
  while (std::cin >> kv_e4m3 >> head_dim >> streams >> cc >> page_size) {
    std::cout << flashgen::sm80::decode::plan_takes_tma(kv_e4m3 != 0, head_dim, streams, cc, page_size) << "\n";
  }
  return 0;
}
