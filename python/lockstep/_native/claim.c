#include "fastpath.h"
int ls_fast_register_claim(PyObject *module) { (void)module; return 0; }
