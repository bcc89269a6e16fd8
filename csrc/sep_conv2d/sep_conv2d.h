// Raw-pointer launchers of sep_conv2d:
//   y = pointwise(depthwise(relu(x) if pre_relu else x)) + bias
// with a depthwise kh x kw convolution (stride, padding, dilation; one filter per channel) followed by a
// 1x1 convolution from C to C_out channels.
#pragma once

#include <cstdint>

namespace pyaccel_nas {

struct SepConv2dShape {
  int64_t batch, channels, out_channels;
  int64_t in_h, in_w, out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool pre_relu;
};

// Element strides of a 4-D activation (N, C, H, W). The wrapper passes dense NCHW or NHWC tensors.
struct Strides4 {
  int64_t n, c, h, w;
};

// dw: (C, kh, kw) contiguous; pw: (C_out, C) contiguous; bias: (C_out,) or nullptr.
template <typename T>
void sep_conv2d_forward_cpu(const SepConv2dShape& s, const T* x, Strides4 x_strides, const T* dw, const T* pw,
                            const T* bias, T* y, Strides4 y_strides);

// Recomputes the depthwise result row by row; nothing from the forward is needed but its inputs.
// grad_x: zero-filled, shaped like x; grad_dw: (C, kh, kw), grad_pw: (C_out, C), grad_bias: (C_out,),
// all contiguous.
template <typename T>
void sep_conv2d_backward_cpu(const SepConv2dShape& s, const T* grad_y, Strides4 grad_y_strides, const T* x,
                             Strides4 x_strides, const T* dw, const T* pw, T* grad_x, Strides4 grad_x_strides,
                             T* grad_dw, T* grad_pw, T* grad_bias);

}  // namespace pyaccel_nas
