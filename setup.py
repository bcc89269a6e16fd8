"""Builds the C++ (and, where available, CUDA) op library as ``pyaccel_nas._C``.

Install with ``pip install --no-build-isolation .`` after torch is installed: the extension compiles
against the torch that is already in the environment.

CUDA sources (``csrc/**/*.cu``) are added when torch has CUDA and ``nvcc`` is found, or when
``FORCE_CUDA=1``; ``FORCE_CUDA=0`` forces a CPU-only build. A CPU-only build registers no CUDA kernels,
and the Python layer falls back to the reference implementation for CUDA tensors (``pyaccel_nas.info()``).
The CUDA build targets ``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0``: A100 and H100/H200) and needs no GPU.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    forced = os.environ.get("FORCE_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def _sources(pattern: str) -> list[str]:
    # Relative paths: setuptools refuses absolute source paths in some versions.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", pattern), recursive=True))


def _extension():
    # -fopenmp matters: at::parallel_for is inlined from ATen headers and only runs in parallel when the
    # extension itself is compiled with OpenMP (torch's wheel uses the OpenMP backend).
    cxx_flags = ["-O3", "-fopenmp", "-DPYACCEL_NAS_PYTHON_MODULE"]
    sources = _sources("*.cpp")
    if _want_cuda():
        # torch's CUDA headers include cuBLAS/cuSPARSE headers, which the CUDA wheel ships (a bare toolkit may not)
        cuda_include = os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "include")
        # read by torch.utils.cpp_extension, which turns it into -gencode flags
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        nvcc_flags = ["-O3", "-lineinfo"]  # -lineinfo: compute-sanitizer reports name source lines
        return CUDAExtension(
            "pyaccel_nas._C",
            sources + _sources("*.cu"),
            include_dirs=[os.path.abspath(cuda_include)],
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "pyaccel_nas._C",
        sources,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
