// Raw-pointer launchers of batch_norm in training mode: per channel c of x (shape [N][C][S]),
//   mean[c] = E[x], var[c] = E[(x - mean)^2] (biased), invstd[c] = 1 / sqrt(var[c] + eps),
//   y = (x - mean[c]) * invstd[c] * weight[c] + bias[c],
// and, when given, running_mean = (1 - momentum) running_mean + momentum mean and running_var likewise with
// the unbiased variance var * M / (M - 1), M = N * S (as torch.nn.functional.batch_norm).
#pragma once

#include <cstdint>

namespace pyaccel_nas {

// A rank 2-5 tensor seen as [N][C][S] (S = product of the spatial sizes). The wrapper only passes dense
// tensors, channels-first ([N][C][S]) or channels-last ([N][S][C]); x, y and the gradients share it.
struct NormLayout {
  int64_t batch, channels, spatial;
  bool channels_last;
};

// weight, bias, running_mean and running_var may be null (no affine part, no running statistics).
// M = batch * spatial must be at least 2. save_mean and save_invstd receive mean and invstd.
template <typename T>
void batch_norm_forward_cpu(const NormLayout& layout, const T* x, const T* weight, const T* bias, T* running_mean,
                            T* running_var, double momentum, double eps, T* y, T* save_mean, T* save_invstd);

// With g = grad_y and xhat = (x - mean) * invstd:
//   grad_bias[c] = sum g, grad_weight[c] = sum g * xhat,
//   grad_x = weight[c] * invstd[c] * (g - grad_bias[c] / M - xhat * grad_weight[c] / M).
// weight may be null (taken as 1). grad_y's images are dense in the layout but start grad_y_image_stride
// elements apart (channels-first; a channels-last grad_y is dense).
template <typename T>
void batch_norm_backward_cpu(const NormLayout& layout, const T* grad_y, int64_t grad_y_image_stride, const T* x,
                             const T* weight, const T* mean, const T* invstd, T* grad_x, T* grad_weight,
                             T* grad_bias);

}  // namespace pyaccel_nas
