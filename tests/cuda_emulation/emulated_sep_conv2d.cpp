// The CUDA launchers and kernels of sep_conv2d, compiled for the CPU emulator.
#include "../../csrc/sep_conv2d/sep_conv2d_cuda.cu"
