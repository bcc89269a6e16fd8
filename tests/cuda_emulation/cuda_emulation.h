// Runs the device code of csrc/*/*_kernels.cuh on the CPU, so its indexing, bounds, shared memory and
// synchronisation are exercised where no GPU is present. One std::thread per CUDA thread of a block; the
// blocks of a grid run one after another, so a `__shared__` variable (a function-local static here)
// belongs to the running block; __syncthreads and the warp shuffles are barriers. Only for small shapes.
#pragma once

#include <array>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emulation {

inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<std::array<unsigned char, 8>> lane_values;  // one slot per thread of the block

// Runs kernel(args...) over the grid with block.x threads per block (a multiple of 32). The same
// block.x threads run every block in turn, meeting at a barrier between blocks.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, const Args&... args) {
  block_dim = block;
  grid_dim = grid;
  const unsigned threads = block.x;
  block_barrier = std::make_unique<std::barrier<>>(threads);
  warp_barriers.clear();
  for (unsigned w = 0; w < (threads + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  lane_values.assign(threads, {});
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_idx = dim3(t, 0, 0);
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            block_idx = dim3(bx, by, bz);
            kernel(args...);
            block_barrier->arrive_and_wait();  // the next block reuses the shared memory
          }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace emulation

#define threadIdx (::emulation::thread_idx)
#define blockIdx (::emulation::block_idx)
#define blockDim (::emulation::block_dim)
#define gridDim (::emulation::grid_dim)

inline void __syncthreads() { emulation::block_barrier->arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned, T value, int offset) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  std::memcpy(emulation::lane_values[threadIdx.x].data(), &value, sizeof(T));
  emulation::warp_barriers[warp]->arrive_and_wait();
  T result = value;
  if (lane + offset < 32) std::memcpy(&result, emulation::lane_values[threadIdx.x + offset].data(), sizeof(T));
  emulation::warp_barriers[warp]->arrive_and_wait();  // nobody overwrites a slot before it is read
  return result;
}
