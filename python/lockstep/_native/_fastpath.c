/* lockstep._native._fastpath: the per-message calls (offer, receive, poll, a ring's write and
 * read, try_claim, a client's send to the sequencer) as CPython vectorcall objects, one file per
 * concept: offer.c, receive.c, poll.c, ring_fast.c, claim.c, send.c; their shared lifecycle is
 * fastpath.h / fastpath_common.c, and this file is the module. A cffi call costs ~70-170 ns
 * (argument tuple, conversions, GIL release) plus the Python method around it; these are one C
 * entry each (~40 ns). They borrow the C structs the Python objects own (from a size-checked
 * cffi buffer) and are detached before those are freed or unmapped; whatever they do not handle
 * (errors, back-pressure, padding, fragments, closed) goes to a Python fallback, so there is one
 * implementation of each. */
#include "fastpath.h"

/* -- module -------------------------------------------------------------------------------- */

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lockstep._native._fastpath",
    .m_doc = "Vectorcall entry points for the per-message calls (see _fastpath.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *module = PyModule_Create(&fastpath_module);
    if (NULL == module)
    {
        return NULL;
    }
    if (ls_fast_register(module) < 0)
    {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
