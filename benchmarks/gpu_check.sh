#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (sm_80 or sm_90), in an environment with the
# CUDA torch (e.g. `TORCH_VERSION=2.14.1 bash .ci/install`):
#
#   bash benchmarks/gpu_check.sh
#
# 1. builds the extension in place with the CUDA kernels (FORCE_CUDA=1);
# 2. runs the whole test suite, CUDA tests included (they are skipped only where no GPU is visible);
# 3. runs the CUDA op tests under compute-sanitizer memcheck (with PyTorch's caching allocator off, so
#    every allocation has exact bounds) and racecheck (shared-memory races);
# 4. runs the GPU benchmarks: the full shape grid (eager vs fused) and the quick grid (with torch.compile),
#    timed with CUDA events against the GPU's measured device-to-device copy bandwidth.
# Everything is logged to benchmarks/results/gpu_check_<gpu>_<time>.log beside the benchmark JSON/CSV.
# Stops at the first failing step. GPU_CHECK_SKIP_BENCH=1 skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
gpu=$("$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name())")
slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9.' '-' | sed 's/-$//')
mkdir -p benchmarks/results
log="benchmarks/results/gpu_check_${slug}_$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee "$log") 2>&1
echo "== GPU check on $gpu, $(date -u)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== 1. build with CUDA"
# torch takes CUDA_HOME from the folder of the first nvcc on PATH; a wrapper such as /usr/local/bin/nvcc
# would make it /usr/local, where the toolkit's libraries (libcudart) are not
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" "$PYTHON" setup.py build_ext --inplace
"$PYTHON" -m pyaccel_nas.cli info

echo "== 2. test suite (CPU and CUDA)"
"$PYTHON" -m pytest tests -q -rs

# The CUDA runs of the op tests; hypothesis draws fewer examples (the sanitizers slow every kernel ~100x).
CUDA_OP_TESTS=(tests/test_cuda.py tests/test_sep_conv2d.py tests/test_channel_gate.py tests/test_multires_sum.py)
SANITIZED=(-m pytest "${CUDA_OP_TESTS[@]}" -q -k "cuda" -m "not slow" -p no:cacheprovider)
echo "== 3a. compute-sanitizer memcheck"
PYACCEL_NAS_HYPOTHESIS_EXAMPLES=5 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool memcheck --error-exitcode 1 --print-limit 20 "$PYTHON" "${SANITIZED[@]}"
echo "== 3b. compute-sanitizer racecheck"
PYACCEL_NAS_HYPOTHESIS_EXAMPLES=5 \
  compute-sanitizer --tool racecheck --error-exitcode 1 --print-limit 20 "$PYTHON" "${SANITIZED[@]}"

if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  echo "== 4. benchmarks"
  "$PYTHON" -m benchmarks.report --device cuda --grid full --impls eager,fused
  "$PYTHON" -m benchmarks.report --device cuda --grid quick
fi
echo "== GPU check passed on $gpu; log: $log"
