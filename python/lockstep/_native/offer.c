/* Offer: publication.offer(data, reserved_value=0) -> position or negative status, one C entry
 * per message. Whatever it does not finish (an error, keyword arguments, a non-buffer, and
 * not connected / back-pressured when the Python offer may look for subscribers again) goes
 * to the Python offer, so there is one implementation of each. */
#include "fastpath.h"

#include <structmember.h> /* PyMemberDef, T_LONGLONG (3.11) */
#include <time.h>

#include "lockstep.h"

enum
{
    OFFER_BUFFER,   /* ffi.buffer of the ls_publication_t: keeps it alive */
    OFFER_FALLBACK, /* the Python offer */
    OFFER_REFS
};

typedef struct
{
    LsFastHead head;        /* target: the ls_publication_t */
    long long retry_at_ns;  /* not connected / back-pressured before this: the status at once */
} OfferObject;

/* Whether a not-connected or back-pressured result goes straight back: the Python offer
 * re-checks subscribers at most once per interval (it sets retry_at_ns), so within it a retry
 * there would return the same status, at ~30x the cost (Aeron's offer returns it at once). */
static int offer_status_now(const OfferObject *self, int64_t result)
{
    if (LS_PUBLICATION_NOT_CONNECTED != result && LS_PUBLICATION_BACK_PRESSURED != result)
    {
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* time.monotonic_ns()'s clock */
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec < self->retry_at_ns;
}

static PyObject *offer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LsFastHead *self = (LsFastHead *)callable;
    ls_publication_t *pub = self->target;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (NULL == pub || NULL != kwnames || nargs < 1 || nargs > 2)
    {
        return PyObject_Vectorcall(self->refs[OFFER_FALLBACK], args, nargsf, kwnames);
    }
    int64_t reserved_value = 0;
    if (2 == nargs)
    {
        reserved_value = PyLong_AsLongLong(args[1]);
        if (-1 == reserved_value && PyErr_Occurred())
        {
            return NULL;
        }
    }
    int64_t result;
    if (PyBytes_CheckExact(args[0]))
    {
        result = ls_publication_offer(
            pub, (const uint8_t *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]), reserved_value);
    }
    else
    {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        {
            PyErr_Clear(); /* not a contiguous buffer: the fallback says what is wrong */
            return PyObject_Vectorcall(self->refs[OFFER_FALLBACK], args, nargsf, NULL);
        }
        result = ls_publication_offer(pub, (const uint8_t *)view.buf, (size_t)view.len, reserved_value);
        PyBuffer_Release(&view);
    }
    if (result > 0 || offer_status_now((const OfferObject *)self, result))
    {
        return PyLong_FromLongLong(result);
    }
    /* Not connected, back-pressured, an error...: the Python offer re-checks subscribers,
     * raises with the C error message, retries. Offering again after a failure is harmless. */
    return PyObject_Vectorcall(self->refs[OFFER_FALLBACK], args, nargsf, NULL);
}

static PyObject *offer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *refs[OFFER_REFS];
    static char *names[] = { "publication", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:Offer", names, &refs[OFFER_BUFFER], &refs[OFFER_FALLBACK]))
    {
        return NULL;
    }
    void *pub = ls_fast_buffer_address(refs[OFFER_BUFFER], sizeof(ls_publication_t), "ls_publication_t");
    return NULL == pub ? NULL : ls_fast_alloc(type, offer_vectorcall, pub, refs, OFFER_REFS);
}

static PyMethodDef offer_methods[] = {
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyMemberDef offer_members[] = {
    { "retry_at_ns", T_LONGLONG, offsetof(OfferObject, retry_at_ns), 0,
      "CLOCK_MONOTONIC ns: NOT_CONNECTED / BACK_PRESSURED before it are returned from C at once" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject OfferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Offer",
    .tp_doc = "Offer(ffi.buffer(publication), fallback): offer(data, reserved_value=0) -> position (> 0) "
              "or a negative status.",
    LS_FAST_TYPE_COMMON(OfferObject),
    .tp_new = offer_new,
    .tp_methods = offer_methods,
    .tp_members = offer_members,
};

int ls_fast_register_offer(PyObject *module)
{
    return ls_fast_add_type(module, &OfferType, "Offer");
}
