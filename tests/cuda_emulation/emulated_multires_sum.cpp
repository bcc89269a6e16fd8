// The CUDA launchers and kernels of multires_sum, compiled for the CPU emulator.
#include "../../csrc/multires_sum/multires_sum_cuda.cu"
