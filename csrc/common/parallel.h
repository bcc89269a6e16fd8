// Deterministic parallel accumulation for the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pyaccel_nas {

// Splits [0, n) into at most at::get_num_threads() contiguous chunks, runs
// `body(chunk_begin, chunk_end, partial)` for each in parallel with its own zeroed `partial` buffer of
// `width` accumulators, then adds the partials into `out` in chunk order. The order of every float addition
// is fixed for a given thread count, so gradients are reproducible run to run (no atomics, no locks).
// Chunks hold at least `min_per_chunk` items: below that a parallel region costs more than it saves.
template <typename Acc, typename Body>
void parallel_accumulate(int64_t n, int64_t width, Acc* out, const Body& body, int64_t min_per_chunk = 1) {
  std::fill(out, out + width, Acc(0));
  if (n <= 0) return;
  const int64_t chunks =
      std::min<int64_t>(std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_chunk)), std::max(1, at::get_num_threads()));
  std::vector<Acc> partials(static_cast<size_t>(chunks * width), Acc(0));
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      body(chunk * n / chunks, (chunk + 1) * n / chunks, partials.data() + chunk * width);
    }
  });
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const Acc* partial = partials.data() + chunk * width;
    for (int64_t i = 0; i < width; ++i) out[i] += partial[i];
  }
}

}  // namespace pyaccel_nas
