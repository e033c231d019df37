/* Receive: image.receive() -> the next whole message (bytes) or None, one C entry per message;
 * ReceiveAny: subscription.receive(timeout=0.0) over its images in turn. Padding, fragments,
 * corrupt frames, lost images and closed go to the Python fallback (reader.py, subscription.py). */
#include "fastpath.h"

#include <structmember.h> /* PyMemberDef, T_INT (3.11) */

#include "lockstep.h"

enum
{
    RECEIVE_BUFFER,   /* ffi.buffer of the ls_image_t: keeps it alive */
    RECEIVE_FALLBACK, /* () -> bytes | None */
    RECEIVE_REFS
};

typedef struct
{
    LsFastHead head; /* target: the ls_image_t */
    int peek;        /* int32 index of the frame length at the position: the binding's poll hint */
    int polling;     /* a poll of this image is in flight (poll.c sets it while its handlers run) */
} ReceiveObject;

static PyObject *receive_one(ReceiveObject *self)
{
    ls_image_t *image = self->head.target;
    if (NULL == image)
    {
        return PyObject_CallNoArgs(self->head.refs[RECEIVE_FALLBACK]);
    }
    if (self->polling)
    {
        /* The poll stores the position after its handlers: this would read what it hands out. */
        PyErr_SetString(PyExc_RuntimeError, "receive: a poll of this image is in flight (from its handler, or from "
                                            "another thread during one): its messages would be handed out twice");
        return NULL;
    }
    int32_t length;
    const uint8_t *payload = ls_image_peek_message(image, &length);
    if (NULL == payload)
    {
        if (0 == length)
        {
            Py_RETURN_NONE;
        }
        return PyObject_CallNoArgs(self->head.refs[RECEIVE_FALLBACK]);
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
            return PyObject_CallNoArgs(self->head.refs[RECEIVE_FALLBACK]);
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
    PyObject *refs[RECEIVE_REFS];
    int peek;
    static char *names[] = { "image", "peek", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiO:Receive", names, &refs[RECEIVE_BUFFER], &peek,
                                     &refs[RECEIVE_FALLBACK]))
    {
        return NULL;
    }
    void *image = ls_fast_buffer_address(refs[RECEIVE_BUFFER], sizeof(ls_image_t), "ls_image_t");
    if (NULL == image)
    {
        return NULL;
    }
    ReceiveObject *self = (ReceiveObject *)ls_fast_alloc(type, receive_vectorcall, image, refs, RECEIVE_REFS);
    if (NULL != self)
    {
        self->peek = peek;
    }
    return (PyObject *)self;
}

static PyMethodDef receive_methods[] = {
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyMemberDef receive_members[] = {
    { "peek", T_INT, offsetof(ReceiveObject, peek), 0, "index (int32 words) of the frame length at the position" },
    { "polling", T_INT, offsetof(ReceiveObject, polling), READONLY, "a poll of this image is in flight" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject ReceiveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Receive",
    .tp_doc = "Receive(ffi.buffer(image), peek, fallback): receive() -> the next whole message (bytes), "
              "or None when there is none yet.",
    LS_FAST_TYPE_COMMON(ReceiveObject),
    .tp_new = receive_new,
    .tp_methods = receive_methods,
    .tp_members = receive_members,
};

/* -- ReceiveAny: subscription.receive(timeout=0.0) -> bytes | None ---------------------- */

enum
{
    ANY_IMAGES,       /* tuple of Receive, polled in turn */
    ANY_HOUSEKEEPING, /* () -> None: every 64 empty / 1024 busy calls (it rate-limits itself) */
    ANY_BLOCKING,     /* (timeout) -> bytes | None: when nothing is there and timeout != 0 */
    ANY_REFS
};

typedef struct
{
    LsFastHead head; /* target unused: `detached` says closed */
    Py_ssize_t next;
    uint64_t calls;
    int last_empty; /* the previous call found nothing */
    int detached;   /* the subscription is closed: every call goes to `blocking` (it raises) */
} ReceiveAnyObject;

static PyObject *receive_any_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ReceiveAnyObject *self = (ReceiveAnyObject *)callable;
    PyObject **refs = self->head.refs;
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
        return PyObject_CallOneArg(refs[ANY_BLOCKING], NULL == timeout ? Py_None : timeout);
    }

    /* Housekeeping first: it may raise (a lost image told), which must not drop a message read. */
    if (0 == (++self->calls & (self->last_empty ? 63 : 1023)))
    {
        PyObject *result = PyObject_CallNoArgs(refs[ANY_HOUSEKEEPING]);
        if (NULL == result)
        {
            return NULL;
        }
        Py_DECREF(result);
    }

    PyObject *data = NULL;                            /* a message (new reference) once one is found */
    PyObject *images = Py_NewRef(refs[ANY_IMAGES]); /* a fallback's Python code may replace the tuple */
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
        if (images != refs[ANY_IMAGES])
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
            return PyObject_CallOneArg(refs[ANY_BLOCKING], timeout);
        }
    }
    return empty ? Py_NewRef(Py_None) : data;
}

static PyObject *receive_any_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *refs[ANY_REFS] = { NULL };
    static char *names[] = { "housekeeping", "blocking", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:ReceiveAny", names, &refs[ANY_HOUSEKEEPING],
                                     &refs[ANY_BLOCKING]))
    {
        return NULL;
    }
    refs[ANY_IMAGES] = PyTuple_New(0);
    if (NULL == refs[ANY_IMAGES])
    {
        return NULL;
    }
    PyObject *self = ls_fast_alloc(type, receive_any_vectorcall, NULL, refs, ANY_REFS);
    Py_DECREF(refs[ANY_IMAGES]);
    return self;
}

static PyObject *receive_any_set_images(ReceiveAnyObject *self, PyObject *images)
{
    return ls_fast_set_images(&self->head, ANY_IMAGES, &self->next, images, &ReceiveType);
}

static PyObject *receive_any_detach(ReceiveAnyObject *self, PyObject *Py_UNUSED(ignored))
{
    self->detached = 1;
    PyObject *empty = PyTuple_New(0);
    if (NULL == empty)
    {
        return NULL;
    }
    Py_SETREF(self->head.refs[ANY_IMAGES], empty);
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
    .tp_doc = "ReceiveAny(housekeeping, blocking): receive(timeout=0.0) -> the next whole message of any "
              "image (in turn), or None.",
    LS_FAST_TYPE_COMMON(ReceiveAnyObject),
    .tp_new = receive_any_new,
    .tp_methods = receive_any_methods,
};

int ls_fast_register_receive(PyObject *module)
{
    if (ls_fast_add_type(module, &ReceiveType, "Receive") < 0 || ls_fast_add_type(module, &ReceiveAnyType, "ReceiveAny") < 0)
    {
        return -1;
    }
    return 0;
}
