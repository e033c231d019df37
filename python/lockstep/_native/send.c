/* Send: client.send(command) -> True, or False when the sequencer's ingress ring is full (one
 * C entry per command); Send.batch(commands) sends a sequence of them in one entry. Errors,
 * closed, over-long commands and non-buffers go to the Python send (sequencer_client.py). */
#include "fastpath.h"

#include <structmember.h> /* PyMemberDef, T_LONGLONG, T_PYSSIZET (3.11) */

#include "lockstep.h"

enum
{
    SEND_BUFFER,   /* ffi.buffer of the ingress ls_ring_buffer_t: keeps it alive */
    SEND_FALLBACK, /* the Python send */
    SEND_REFS
};

typedef struct
{
    LsFastHead head;                /* target: the ingress ring */
    int32_t origin_id;
    long long next_origin_sequence; /* the number the next command goes with */
    Py_ssize_t max_length;          /* longer commands go to the fallback (which refuses them) */
} SendObject;

/* 1 sent, 0 ring full, -1 for the fallback (not a buffer, too long, an error: it raises). */
static int send_one(SendObject *self, ls_ring_buffer_t *ring, PyObject *command)
{
    int rc;
    if (PyBytes_CheckExact(command))
    {
        if (PyBytes_GET_SIZE(command) > self->max_length)
        {
            return -1;
        }
        rc = ls_sequencer_send(ring, self->origin_id, self->next_origin_sequence,
                               (const uint8_t *)PyBytes_AS_STRING(command), (size_t)PyBytes_GET_SIZE(command));
    }
    else
    {
        Py_buffer view;
        if (PyObject_GetBuffer(command, &view, PyBUF_SIMPLE) < 0)
        {
            PyErr_Clear();
            return -1;
        }
        rc = view.len > self->max_length
            ? LS_RB_ERROR
            : ls_sequencer_send(ring, self->origin_id, self->next_origin_sequence, (const uint8_t *)view.buf,
                                (size_t)view.len);
        PyBuffer_Release(&view);
    }
    if (LS_RB_SUCCESS == rc)
    {
        self->next_origin_sequence++;
        return 1;
    }
    return LS_RB_FULL == rc ? 0 : -1;
}

static PyObject *send_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SendObject *self = (SendObject *)callable;
    ls_ring_buffer_t *ring = self->head.target;
    if (NULL != ring && NULL == kwnames && 1 == PyVectorcall_NARGS(nargsf))
    {
        const int sent = send_one(self, ring, args[0]);
        if (sent >= 0)
        {
            return Py_NewRef(sent ? Py_True : Py_False);
        }
    }
    return PyObject_Vectorcall(self->head.refs[SEND_FALLBACK], args, nargsf, kwnames); /* raises, or sends */
}

/* batch(commands) -> how many of the first commands were sent (fewer: the ring filled). The
 * first one the fast path cannot take goes to the fallback, which sends it or raises. */
static PyObject *send_batch(SendObject *self, PyObject *commands)
{
    PyObject *sequence = PySequence_Fast(commands, "send_batch: expected a sequence of commands");
    if (NULL == sequence)
    {
        return NULL;
    }
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject **items = PySequence_Fast_ITEMS(sequence);
    Py_ssize_t sent = 0;
    while (sent < count)
    {
        ls_ring_buffer_t *ring = self->head.target; /* (re-read: the fallback's Python code may close) */
        const int one = NULL == ring ? -1 : send_one(self, ring, items[sent]);
        if (0 == one)
        {
            break;
        }
        if (one < 0)
        {
            PyObject *result = PyObject_CallOneArg(self->head.refs[SEND_FALLBACK], items[sent]);
            if (NULL == result)
            {
                Py_DECREF(sequence);
                return NULL;
            }
            const int taken = PyObject_IsTrue(result);
            Py_DECREF(result);
            if (taken <= 0)
            {
                break;
            }
        }
        sent++;
    }
    Py_DECREF(sequence);
    return PyLong_FromSsize_t(sent);
}

static PyObject *send_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *refs[SEND_REFS];
    int origin_id;
    long long next_origin_sequence;
    Py_ssize_t max_length = PY_SSIZE_T_MAX;
    static char *names[] = { "ring", "origin_id", "next_origin_sequence", "fallback", "max_length", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiLO|n:Send", names, &refs[SEND_BUFFER], &origin_id,
                                     &next_origin_sequence, &refs[SEND_FALLBACK], &max_length))
    {
        return NULL;
    }
    void *ring = ls_fast_buffer_address(refs[SEND_BUFFER], sizeof(ls_ring_buffer_t), "ls_ring_buffer_t");
    if (NULL == ring)
    {
        return NULL;
    }
    SendObject *self = (SendObject *)ls_fast_alloc(type, send_vectorcall, ring, refs, SEND_REFS);
    if (NULL != self)
    {
        self->origin_id = origin_id;
        self->next_origin_sequence = next_origin_sequence;
        self->max_length = max_length;
    }
    return (PyObject *)self;
}

static PyMethodDef send_methods[] = {
    { "batch", (PyCFunction)send_batch, METH_O,
      "batch(commands) -> how many of the first commands were sent (fewer: the ingress ring is full)." },
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyMemberDef send_members[] = {
    { "next_origin_sequence", T_LONGLONG, offsetof(SendObject, next_origin_sequence), 0,
      "the origin sequence the next command goes with" },
    { "max_length", T_PYSSIZET, offsetof(SendObject, max_length), 0, "commands longer than this go to the fallback" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject SendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Send",
    .tp_doc = "Send(ffi.buffer(ring), origin_id, next_origin_sequence, fallback, max_length=...): "
              "send(command) -> True, or False when the ingress ring is full.",
    LS_FAST_TYPE_COMMON(SendObject),
    .tp_new = send_new,
    .tp_methods = send_methods,
    .tp_members = send_members,
};

int ls_fast_register_send(PyObject *module)
{
    return ls_fast_add_type(module, &SendType, "Send");
}
