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

// All pointers are to dense (contiguous) arrays: x (N, C, H, W) and y (N, C_out, H_out, W_out) in NCHW;
// dw: (C, kh, kw); pw: (C_out, C); bias: (C_out,) or nullptr.
template <typename T>
void sep_conv2d_forward_cpu(const SepConv2dShape& s, const T* x, const T* dw, const T* pw, const T* bias, T* y);

// Recomputes the depthwise result; nothing from the forward is needed but its inputs.
// Writes every element of grad_x (N, C, H, W) and sets grad_dw (C, kh, kw), grad_pw (C_out, C) and
// grad_bias (C_out,); all dense.
template <typename T>
void sep_conv2d_backward_cpu(const SepConv2dShape& s, const T* grad_y, const T* x, const T* dw, const T* pw,
                             T* grad_x, T* grad_dw, T* grad_pw, T* grad_bias);

// Element strides of an (N, C, H, W) tensor.
struct Strides4 {
  int64_t n, c, h, w;
};

// CUDA (float, double, c10::Half, c10::BFloat16; accumulation in float, or double for double). x, y,
// grad_y and grad_x may have any strides (y and grad_x are written through theirs); dw, pw, bias and the
// weight gradients are dense as above. Kernels run on the current stream of the current device.
template <typename T>
void sep_conv2d_forward_cuda(const SepConv2dShape& s, const T* x, Strides4 xs, const T* dw, const T* pw,
                             const T* bias, T* y, Strides4 ys);

template <typename T>
void sep_conv2d_backward_cuda(const SepConv2dShape& s, const T* grad_y, Strides4 gys, const T* x, Strides4 xs,
                              const T* dw, const T* pw, T* grad_x, Strides4 gxs, T* grad_dw, T* grad_pw,
                              T* grad_bias);

}  // namespace pyaccel_nas
