// Creates the pyaccel_nas op library; PyTorch allows one TORCH_LIBRARY per namespace and process. Each op
// adds its schemas to it with a TORCH_LIBRARY_FRAGMENT next to its wrappers (csrc/<op>/<op>.cpp), which
// also register its kernels per device; its autograd is registered in csrc/<op>/<op>_autograd.cpp, and its
// fake kernels from Python (pyaccel_nas/ops/). These static registrations run in whatever order the
// library's files are initialised: the dispatcher accepts kernels registered before their schema.
#include <torch/library.h>

TORCH_LIBRARY(pyaccel_nas, m) {}
