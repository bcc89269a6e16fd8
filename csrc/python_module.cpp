// The Python entry point of `pyaccel_nas._C`, compiled only by setup.py (PYACCEL_NAS_PYTHON_MODULE).
// Importing the module loads this shared library, which runs the static TORCH_LIBRARY registrations;
// the module itself is empty: every op is reached through torch.ops.pyaccel_nas.
#ifdef PYACCEL_NAS_PYTHON_MODULE
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif
