// Raw-pointer launchers of channel_gate: y[n, c, s] = x[n, c, s] * g'[c], with g'[c] = 0 where
// |g[c]| < threshold (when a threshold is given) and g[c] otherwise.
#pragma once

#include <cstdint>

namespace pyaccel_nas {

// A rank 2-5 tensor seen as [N][C][S] (S = product of the spatial sizes). The wrapper only passes dense
// tensors, channels-first ([N][C][S]) or channels-last ([N][S][C]); x, y and the gradients share it.
struct GateLayout {
  int64_t batch, channels, spatial;
  bool channels_last;
};

template <typename T>
void channel_gate_forward_cpu(const GateLayout& layout, const T* x, const T* gate, bool has_threshold, double threshold,
                              T* y);

template <typename T>
void channel_gate_backward_cpu(const GateLayout& layout, const T* grad_y, const T* x, const T* gate,
                               bool has_threshold, double threshold, T* grad_x, T* grad_gate);

// CUDA (float, double, c10::Half, c10::BFloat16; accumulation in float, or double for double), same
// contract; grad_gate is reduced deterministically (no atomics). Runs on the current stream.
template <typename T>
void channel_gate_forward_cuda(const GateLayout& layout, const T* x, const T* gate, bool has_threshold,
                               double threshold, T* y);

template <typename T>
void channel_gate_backward_cuda(const GateLayout& layout, const T* grad_y, const T* x, const T* gate,
                                bool has_threshold, double threshold, T* grad_x, T* grad_gate);

}  // namespace pyaccel_nas
