/* lockstep._native._fastpath: the per-message calls — offer, receive, a ring write, and a client's
 * send to the sequencer — as CPython vectorcall objects. A cffi call costs ~70-170 ns (argument tuple,
 * conversions, GIL release) plus the Python method around it; these are one C entry each
 * (~40 ns). Everything else stays in the
 * cffi layer: these objects only borrow the C structs that the Python objects own (and keep
 * alive through `owner`), and the owner detaches them before it frees or unmaps anything.
 * Whatever the fast path does not handle (errors, back-pressure, padding, fragments, closed,
 * keyword arguments) goes to a Python fallback, so there is one implementation of each. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* PyMemberDef, T_INT (3.11) */

#include "lockstep.h"
#include "fastpath.h" /* the types of poll.c, ring_fast.c, claim.c */

/* -- Offer: pub.offer(data, reserved_value=0) -> position or negative status ------------- */

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    ls_publication_t *pub; /* NULL once detached */
    PyObject *owner;       /* keeps *pub alive */
    PyObject *fallback;    /* the Python offer: called whenever the fast path does not succeed */
} OfferObject;

static PyObject *offer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    OfferObject *self = (OfferObject *)callable;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (NULL == self->pub || NULL != kwnames || nargs < 1 || nargs > 2)
    {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
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
            self->pub, (const uint8_t *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]), reserved_value);
    }
    else
    {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        {
            PyErr_Clear(); /* not a contiguous buffer: the fallback says what is wrong */
            return PyObject_Vectorcall(self->fallback, args, nargsf, NULL);
        }
        result = ls_publication_offer(self->pub, (const uint8_t *)view.buf, (size_t)view.len, reserved_value);
        PyBuffer_Release(&view);
    }
    if (result > 0)
    {
        return PyLong_FromLongLong(result);
    }
    /* Not connected, back-pressured, an error...: the Python offer re-checks subscribers,
     * raises with the C error message, retries. Offering again after a failure is harmless. */
    return PyObject_Vectorcall(self->fallback, args, nargsf, NULL);
}

static PyObject *offer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *address, *owner, *fallback;
    static char *names[] = { "address", "owner", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:Offer", names, &address, &owner, &fallback))
    {
        return NULL;
    }
    void *pub = PyLong_AsVoidPtr(address);
    if (NULL == pub)
    {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "address: NULL");
    }
    OfferObject *self = (OfferObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->vectorcall = offer_vectorcall;
    self->pub = pub;
    self->owner = Py_NewRef(owner);
    self->fallback = Py_NewRef(fallback);
    return (PyObject *)self;
}

static int offer_traverse(OfferObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->fallback);
    return 0;
}

static int offer_clear(OfferObject *self)
{
    self->pub = NULL;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->fallback);
    return 0;
}

static void offer_dealloc(OfferObject *self)
{
    PyObject_GC_UnTrack(self);
    offer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *offer_detach(OfferObject *self, PyObject *Py_UNUSED(ignored))
{
    self->pub = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef offer_methods[] = {
    { "detach", (PyCFunction)offer_detach, METH_NOARGS, "Forget the publication: later calls go to the fallback." },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject OfferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Offer",
    .tp_doc = "offer(data, reserved_value=0) -> position (> 0) or a negative status.",
    .tp_basicsize = sizeof(OfferObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(OfferObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = offer_new,
    .tp_traverse = (traverseproc)offer_traverse,
    .tp_clear = (inquiry)offer_clear,
    .tp_dealloc = (destructor)offer_dealloc,
    .tp_methods = offer_methods,
};

/* -- Receive: image.receive() -> bytes | None -------------------------------------------- */

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    ls_image_t *image;  /* NULL once detached */
    int peek;           /* int32 index of the frame length at the position: the binding's poll hint */
    PyObject *owner;    /* keeps *image alive */
    PyObject *fallback; /* () -> bytes | None: padding, fragments, corrupt frames, closed */
} ReceiveObject;

static PyObject *receive_one(ReceiveObject *self)
{
    ls_image_t *image = self->image;
    if (NULL == image)
    {
        return PyObject_CallNoArgs(self->fallback);
    }
    int32_t length;
    const uint8_t *payload = ls_image_peek_message(image, &length);
    if (NULL == payload)
    {
        if (0 == length)
        {
            Py_RETURN_NONE;
        }
        return PyObject_CallNoArgs(self->fallback);
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)payload, length);
    if (NULL != data)
    {
        /* Copied out: now the writer may have the space back, unless the copy may be torn
         * (lapped) or the counter is no longer ours (evicted): then the copy is dropped and
         * the fallback reports the lost image (it re-reads through ls_image_poll_one). */
        const int64_t position = ls_image_consume_peeked(image, length);
        if (position < 0)
        {
            Py_DECREF(data);
            return PyObject_CallNoArgs(self->fallback);
        }
        self->peek = ls_image_length_index(image, position);
    }
    return data;
}

static PyObject *receive_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    (void)args;
    if (0 != PyVectorcall_NARGS(nargsf) || (NULL != kwnames && PyTuple_GET_SIZE(kwnames) > 0))
    {
        PyErr_SetString(PyExc_TypeError, "receive() takes no arguments");
        return NULL;
    }
    return receive_one((ReceiveObject *)callable);
}

static PyObject *receive_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *address, *owner, *fallback;
    int peek;
    static char *names[] = { "address", "peek", "owner", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiOO:Receive", names, &address, &peek, &owner, &fallback))
    {
        return NULL;
    }
    void *image = PyLong_AsVoidPtr(address);
    if (NULL == image)
    {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "address: NULL");
    }
    ReceiveObject *self = (ReceiveObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->vectorcall = receive_vectorcall;
    self->image = image;
    self->peek = peek;
    self->owner = Py_NewRef(owner);
    self->fallback = Py_NewRef(fallback);
    return (PyObject *)self;
}

static int receive_traverse(ReceiveObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->fallback);
    return 0;
}

static int receive_clear(ReceiveObject *self)
{
    self->image = NULL;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->fallback);
    return 0;
}

static void receive_dealloc(ReceiveObject *self)
{
    PyObject_GC_UnTrack(self);
    receive_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *receive_detach(ReceiveObject *self, PyObject *Py_UNUSED(ignored))
{
    self->image = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef receive_methods[] = {
    { "detach", (PyCFunction)receive_detach, METH_NOARGS, "Forget the image: later calls go to the fallback." },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef receive_members[] = {
    { "peek", T_INT, offsetof(ReceiveObject, peek), 0, "index (int32 words) of the frame length at the position" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject ReceiveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Receive",
    .tp_doc = "receive() -> the next whole message (bytes), or None when there is none yet.",
    .tp_basicsize = sizeof(ReceiveObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ReceiveObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = receive_new,
    .tp_traverse = (traverseproc)receive_traverse,
    .tp_clear = (inquiry)receive_clear,
    .tp_dealloc = (destructor)receive_dealloc,
    .tp_methods = receive_methods,
    .tp_members = receive_members,
};

/* -- ReceiveAny: subscription.receive(timeout=0.0) -> bytes | None ---------------------- */

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *images;       /* tuple of Receive, polled in turn */
    Py_ssize_t next;
    uint64_t calls;
    int last_empty;         /* the previous call found nothing */
    PyObject *housekeeping; /* () -> None: every 64 empty / 1024 busy calls (it rate-limits itself) */
    PyObject *blocking;     /* (timeout) -> bytes | None: when nothing is there and timeout != 0 */
    int detached;           /* the subscription is closed: every call goes to `blocking` (it raises) */
} ReceiveAnyObject;

static PyObject *receive_any_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ReceiveAnyObject *self = (ReceiveAnyObject *)callable;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    const Py_ssize_t nkw = NULL == kwnames ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *timeout = NULL;
    if (nargs + nkw > 1 ||
        (1 == nkw && 0 != PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout")))
    {
        PyErr_SetString(PyExc_TypeError, "receive() takes one optional argument, timeout");
        return NULL;
    }
    if (1 == nargs + nkw)
    {
        timeout = args[0];
    }
    if (self->detached)
    {
        return PyObject_CallOneArg(self->blocking, NULL == timeout ? Py_None : timeout);
    }

    /* Housekeeping first: it may raise (a lost image told), which must not drop a message read. */
    if (0 == (++self->calls & (self->last_empty ? 63 : 1023)))
    {
        PyObject *result = PyObject_CallNoArgs(self->housekeeping);
        if (NULL == result)
        {
            return NULL;
        }
        Py_DECREF(result);
    }

    PyObject *data = NULL; /* a message (new reference) once one is found */
    PyObject *images = Py_NewRef(self->images); /* a fallback's Python code may replace the tuple */
    const Py_ssize_t count = PyTuple_GET_SIZE(images);
    for (Py_ssize_t k = 0; k < count; k++)
    {
        if (++self->next >= count)
        {
            self->next = 0;
        }
        PyObject *got = receive_one((ReceiveObject *)PyTuple_GET_ITEM(images, self->next));
        if (NULL == got)
        {
            Py_DECREF(images);
            return NULL;
        }
        if (Py_None != got)
        {
            data = got;
            break;
        }
        Py_DECREF(got);
        if (images != self->images)
        {
            break; /* a fallback replaced the images (one was lost): the next call reads the new ones */
        }
    }
    Py_DECREF(images);
    const int empty = NULL == data;
    self->last_empty = empty;
    if (empty && NULL != timeout)
    {
        const int wait = Py_None == timeout ? 1 : PyObject_IsTrue(timeout);
        if (wait < 0)
        {
            return NULL;
        }
        if (wait)
        {
            return PyObject_CallOneArg(self->blocking, timeout);
        }
    }
    return empty ? Py_NewRef(Py_None) : data;
}

static PyObject *receive_any_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *housekeeping, *blocking;
    static char *names[] = { "housekeeping", "blocking", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:ReceiveAny", names, &housekeeping, &blocking))
    {
        return NULL;
    }
    ReceiveAnyObject *self = (ReceiveAnyObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->vectorcall = receive_any_vectorcall;
    self->images = PyTuple_New(0);
    self->housekeeping = Py_NewRef(housekeeping);
    self->blocking = Py_NewRef(blocking);
    if (NULL == self->images)
    {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *receive_any_set_images(ReceiveAnyObject *self, PyObject *images)
{
    if (!PyTuple_Check(images))
    {
        PyErr_SetString(PyExc_TypeError, "images: expected a tuple of Receive");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(images); i++)
    {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(images, i), &ReceiveType))
        {
            PyErr_SetString(PyExc_TypeError, "images: expected a tuple of Receive");
            return NULL;
        }
    }
    Py_SETREF(self->images, Py_NewRef(images));
    self->next = 0;
    Py_RETURN_NONE;
}

static int receive_any_traverse(ReceiveAnyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->images);
    Py_VISIT(self->housekeeping);
    Py_VISIT(self->blocking);
    return 0;
}

static int receive_any_clear(ReceiveAnyObject *self)
{
    Py_CLEAR(self->images);
    Py_CLEAR(self->housekeeping);
    Py_CLEAR(self->blocking);
    return 0;
}

static void receive_any_dealloc(ReceiveAnyObject *self)
{
    PyObject_GC_UnTrack(self);
    receive_any_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *receive_any_detach(ReceiveAnyObject *self, PyObject *Py_UNUSED(ignored))
{
    self->detached = 1;
    PyObject *empty = PyTuple_New(0);
    if (NULL == empty)
    {
        return NULL;
    }
    Py_SETREF(self->images, empty);
    Py_RETURN_NONE;
}

static PyMethodDef receive_any_methods[] = {
    { "set_images", (PyCFunction)receive_any_set_images, METH_O, "The images to read, a tuple of Receive." },
    { "detach", (PyCFunction)receive_any_detach, METH_NOARGS,
      "Forget the images: every later call goes to the blocking fallback (which raises ClosedError)." },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject ReceiveAnyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.ReceiveAny",
    .tp_doc = "receive(timeout=0.0) -> the next whole message of any image (in turn), or None.",
    .tp_basicsize = sizeof(ReceiveAnyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ReceiveAnyObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = receive_any_new,
    .tp_traverse = (traverseproc)receive_any_traverse,
    .tp_clear = (inquiry)receive_any_clear,
    .tp_dealloc = (destructor)receive_any_dealloc,
    .tp_methods = receive_any_methods,
};

/* -- Send: client.send(command) -> bool (the sequencer's ingress) ----------------------- */

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    ls_ring_buffer_t *ring;        /* NULL once detached */
    int32_t origin_id;
    long long next_origin_sequence; /* the number the next command goes with */
    Py_ssize_t max_length;         /* longer commands go to the fallback (which refuses them) */
    PyObject *owner;               /* keeps *ring alive */
    PyObject *fallback;            /* the Python send: errors, closed, non-buffers */
} SendObject;

static PyObject *send_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SendObject *self = (SendObject *)callable;
    if (NULL == self->ring || NULL != kwnames || 1 != PyVectorcall_NARGS(nargsf))
    {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    int rc;
    if (PyBytes_CheckExact(args[0]))
    {
        if (PyBytes_GET_SIZE(args[0]) > self->max_length)
        {
            return PyObject_Vectorcall(self->fallback, args, nargsf, NULL);
        }
        rc = ls_sequencer_send(
            self->ring, self->origin_id, self->next_origin_sequence, (const uint8_t *)PyBytes_AS_STRING(args[0]),
            (size_t)PyBytes_GET_SIZE(args[0]));
    }
    else
    {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        {
            PyErr_Clear();
            return PyObject_Vectorcall(self->fallback, args, nargsf, NULL);
        }
        if (view.len > self->max_length)
        {
            PyBuffer_Release(&view);
            return PyObject_Vectorcall(self->fallback, args, nargsf, NULL);
        }
        rc = ls_sequencer_send(
            self->ring, self->origin_id, self->next_origin_sequence, (const uint8_t *)view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    if (0 == rc)
    {
        self->next_origin_sequence++;
        Py_RETURN_TRUE;
    }
    if (LS_RB_FULL == rc)
    {
        Py_RETURN_FALSE;
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, NULL); /* raises with the C error */
}

static PyObject *send_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *address, *owner, *fallback;
    int origin_id;
    long long next_origin_sequence;
    Py_ssize_t max_length = PY_SSIZE_T_MAX;
    static char *names[] = { "address", "origin_id", "next_origin_sequence", "owner", "fallback", "max_length", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiLOO|n:Send", names, &address, &origin_id,
            &next_origin_sequence, &owner, &fallback, &max_length))
    {
        return NULL;
    }
    void *ring = PyLong_AsVoidPtr(address);
    if (NULL == ring)
    {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "address: NULL");
    }
    SendObject *self = (SendObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->vectorcall = send_vectorcall;
    self->ring = ring;
    self->origin_id = origin_id;
    self->next_origin_sequence = next_origin_sequence;
    self->max_length = max_length;
    self->owner = Py_NewRef(owner);
    self->fallback = Py_NewRef(fallback);
    return (PyObject *)self;
}

static int send_traverse(SendObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->fallback);
    return 0;
}

static int send_clear(SendObject *self)
{
    self->ring = NULL;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->fallback);
    return 0;
}

static void send_dealloc(SendObject *self)
{
    PyObject_GC_UnTrack(self);
    send_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *send_detach(SendObject *self, PyObject *Py_UNUSED(ignored))
{
    self->ring = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef send_methods[] = {
    { "detach", (PyCFunction)send_detach, METH_NOARGS, "Forget the ring: later calls go to the fallback." },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef send_members[] = {
    { "next_origin_sequence", T_LONGLONG, offsetof(SendObject, next_origin_sequence), 0,
      "the origin sequence the next command goes with" },
    { "max_length", T_PYSSIZET, offsetof(SendObject, max_length), 0,
      "commands longer than this go to the fallback" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject SendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Send",
    .tp_doc = "send(command) -> True, or False when the ingress ring is full.",
    .tp_basicsize = sizeof(SendObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SendObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = send_new,
    .tp_traverse = (traverseproc)send_traverse,
    .tp_clear = (inquiry)send_clear,
    .tp_dealloc = (destructor)send_dealloc,
    .tp_methods = send_methods,
    .tp_members = send_members,
};

/* -- module -------------------------------------------------------------------------------- */

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lockstep._native._fastpath",
    .m_doc = "Vectorcall entry points for offer and receive (see _fastpath.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyTypeObject *types[] = { &OfferType, &ReceiveType, &ReceiveAnyType, &SendType };
    const char *names[] = { "Offer", "Receive", "ReceiveAny", "Send" };
    PyObject *module = PyModule_Create(&fastpath_module);
    if (NULL == module)
    {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    {
        if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0)
        {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (ls_fast_register(module) < 0 || ls_fast_register_codec(module) < 0 || ls_fast_register_apply(module) < 0)
    {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
