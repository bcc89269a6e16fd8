// CPU stand-ins for csrc/common/cuda_launch.cuh (selected with -DPYACCEL_NAS_CUDA_EMULATION):
// launches run in the emulator, grid-stride grids are capped at 3 blocks (so the loops wrap), and
// workspaces start as NaN (so a partial sum that no block wrote shows up in the result).
#pragma once

#include <algorithm>
#include <limits>
#include <vector>

#include "cuda_emulation.h"
#include "../../csrc/common/cuda_utils.cuh"

namespace pyaccel_nas {
namespace cuda {

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, Args&&... args) {
  emulation::launch(grid, block, kernel, static_cast<KernelArgs>(args)...);
}

inline unsigned grid_for(int64_t units) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(units, kThreads), 3)));
}

template <typename T, typename acc_t>
void sum_partials(const acc_t* partial, int64_t parts, int64_t width, T* out) {
  launch(sum_partials_kernel<T, acc_t>, grid_for(width), kThreads, partial, parts, width, out);
}

template <typename acc_t>
struct Workspace {
  explicit Workspace(int64_t count) : buffer(static_cast<size_t>(count), std::numeric_limits<acc_t>::quiet_NaN()) {}
  acc_t* data() { return buffer.data(); }
  void zero(int64_t count) { std::fill(buffer.begin(), buffer.begin() + count, acc_t(0)); }
  std::vector<acc_t> buffer;
};

}  // namespace cuda
}  // namespace pyaccel_nas
