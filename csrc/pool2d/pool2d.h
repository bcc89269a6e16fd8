// Raw-pointer launchers of pool2d: max or average pooling over k_h x k_w windows with stride and zero
// padding, as F.max_pool2d and F.avg_pool2d (dilation 1, ceil_mode False): padded positions are never the
// maximum, and an average divides by the window's taps inside the input (count_include_pad false) or inside
// the padded input (true).
#pragma once

#include <cstdint>

namespace pyaccel_nas {

struct PoolShape {
  int64_t batch, channels, in_h, in_w, out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  bool max;                // max pooling; average otherwise
  bool count_include_pad;  // average: divide by the taps inside the padded input
  bool channels_last;      // x, y and the gradients dense channels-last; dense channels-first otherwise
};

template <typename T>
void pool2d_forward_cpu(const PoolShape& shape, const T* x, T* y);

// grad_x = the transpose of the pooling applied to grad_y. Max pooling recomputes each window's maximum
// from x and sends the gradient to the position F.max_pool2d's indices name: the first maximum in
// row-major order, or the last NaN of a window holding NaNs. Channels-first, grad_y's images are dense but
// start grad_y_image_stride elements apart (channels-last, grad_y is dense).
template <typename T>
void pool2d_backward_cpu(const PoolShape& shape, const T* grad_y, int64_t grad_y_image_stride, const T* x,
                         T* grad_x);

}  // namespace pyaccel_nas
