// Host-side helpers of the CUDA launchers: kernel launch, grid sizes, the second reduction pass,
// workspaces. Kernels run on the current stream of the current device (the wrappers set the device from
// the tensors).
//
// With PYACCEL_NAS_CUDA_EMULATION defined, tests/cuda_emulation/emulated_launch.h (found on the include
// path) replaces these helpers: the tests compile the launchers and kernels for the CPU with it, to run
// them where no GPU is present.
#pragma once

#ifdef PYACCEL_NAS_CUDA_EMULATION
#include "emulated_launch.h"
#else

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <utility>

#include "cuda_utils.cuh"

namespace pyaccel_nas {
namespace cuda {

// Launches kernel<<<grid, block>>>(args...) on the current stream and checks the launch.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, Args&&... args) {
  kernel<<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Blocks for a grid-stride loop over `units` work items: enough to fill the device several times over.
// (Only element-wise kernels use this; reductions size their grids from the shapes alone.)
inline unsigned grid_for(int64_t units) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(units, kThreads), sms * 32)));
}

template <typename T, typename acc_t>
void sum_partials(const acc_t* partial, int64_t parts, int64_t width, T* out) {
  launch(sum_partials_kernel<T, acc_t>, grid_for(width), kThreads, partial, parts, width, out);
}

// Scratch memory from PyTorch's caching allocator, ordered on the current stream (and taken from the
// graph's private pool under CUDA-graph capture). Freed when it goes out of scope.
template <typename acc_t>
struct Workspace {
  explicit Workspace(int64_t count)
      : ptr(c10::cuda::CUDACachingAllocator::get()->allocate(static_cast<size_t>(count) * sizeof(acc_t))) {}
  acc_t* data() { return static_cast<acc_t*>(ptr.get()); }
  void zero(int64_t count) {
    C10_CUDA_CHECK(cudaMemsetAsync(ptr.get(), 0, static_cast<size_t>(count) * sizeof(acc_t),
                                   at::cuda::getCurrentCUDAStream()));
  }
  c10::DataPtr ptr;
};

}  // namespace cuda
}  // namespace pyaccel_nas

#endif  // PYACCEL_NAS_CUDA_EMULATION
