// The CUDA launchers and kernels of channel_gate, compiled for the CPU emulator.
#include "../../csrc/channel_gate/channel_gate_cuda.cu"
