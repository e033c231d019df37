/* A ring's write(msg_type_id, data), read(handler, limit) and controlled_read(handler, limit)
 * in C: one C entry per call, the handler called by vectorcall with (msg_type_id, a zero-copy
 * read-only view). A handler that raises has its message consumed (read) or the messages up to
 * it (controlled_read), as in ring.py; errors, a closed ring and odd arguments go to the
 * Python fallback (ring.py's methods), which raises. */
#include "fastpath.h"

#include "lockstep.h"

#define RING_BATCH 256
#define RING_NO_LIMIT INT32_MAX

enum { RING_BUFFER, RING_FALLBACK, RING_VIEW };

/* -- RingWrite: ring.write(msg_type_id, data) -> bool -------------------------------------- */

static PyObject *ring_write_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LsFastHead *self = (LsFastHead *)callable;
    ls_ring_buffer_t *rb = self->target;
    if (NULL == rb || NULL != kwnames || 2 != PyVectorcall_NARGS(nargsf))
    {
        return PyObject_Vectorcall(self->refs[RING_FALLBACK], args, nargsf, kwnames);
    }
    const long type_id = PyLong_AsLong(args[0]);
    if ((-1 == type_id && PyErr_Occurred()) || type_id < INT32_MIN || type_id > INT32_MAX)
    {
        PyErr_Clear(); /* the fallback says what is wrong */
        return PyObject_Vectorcall(self->refs[RING_FALLBACK], args, nargsf, NULL);
    }
    int rc;
    if (PyBytes_CheckExact(args[1]))
    {
        rc = ls_rb_write(rb, (int32_t)type_id, (const uint8_t *)PyBytes_AS_STRING(args[1]),
                         (size_t)PyBytes_GET_SIZE(args[1]));
    }
    else
    {
        Py_buffer view;
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        {
            PyErr_Clear();
            return PyObject_Vectorcall(self->refs[RING_FALLBACK], args, nargsf, NULL);
        }
        rc = ls_rb_write(rb, (int32_t)type_id, (const uint8_t *)view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    if (LS_RB_SUCCESS == rc)
    {
        Py_RETURN_TRUE;
    }
    if (LS_RB_FULL == rc)
    {
        Py_RETURN_FALSE;
    }
    return PyObject_Vectorcall(self->refs[RING_FALLBACK], args, nargsf, NULL); /* raises with the C error */
}

/* -- RingRead: ring.read / ring.controlled_read(handler, limit) -> messages handled -------- */

typedef struct
{
    LsFastHead head; /* target: the ls_ring_buffer_t; refs: the buffer, the fallback */
    int controlled;
    int32_t types[RING_BATCH];
    int32_t offsets[RING_BATCH];
    int32_t lengths[RING_BATCH];
    int64_t consumed[RING_BATCH];
} RingReadObject;

/* handler(msg_type_id, view of message i); a new reference, or NULL with the exception. */
static PyObject *ring_handle(RingReadObject *self, ls_ring_buffer_t *rb, PyObject *handler, int64_t i)
{
    PyObject *type_id = PyLong_FromLong(self->types[i]);
    if (NULL == type_id)
    {
        return NULL;
    }
    PyObject *view = ls_fast_view(&self->head.refs[RING_VIEW], rb->buffer + self->offsets[i], self->lengths[i], 0);
    if (NULL == view)
    {
        Py_DECREF(type_id);
        return NULL;
    }
    PyObject *args[2] = { type_id, view };
    PyObject *result = PyObject_Vectorcall(handler, args, 2, NULL);
    ls_fast_view_done(view);
    Py_DECREF(type_id);
    return result;
}

/* read: scan batches until `limit` or the ring is empty; consume each batch after it. A close
 * meanwhile (from a handler, or another thread while one runs) lets the batch already scanned go
 * out and be consumed, as ring.py does, then stops; the teardown waits for it (ls_fast_enter). */
static Py_ssize_t ring_read(RingReadObject *self, ls_ring_buffer_t *rb, PyObject *handler, long limit)
{
    Py_ssize_t total = 0;
    while (total < limit && NULL != self->head.target)
    {
        const int64_t want = limit - total < RING_BATCH ? limit - total : RING_BATCH;
        int64_t scanned = 0;
        const int64_t n = ls_rb_scan(rb, self->types, self->offsets, self->lengths, self->consumed, want, &scanned);
        if (n < 0)
        {
            return -2; /* corrupt: the fallback raises */
        }
        for (int64_t i = 0; i < n; i++)
        {
            PyObject *result = ring_handle(self, rb, handler, i);
            if (NULL == result)
            {
                ls_rb_consume(rb, (size_t)self->consumed[i]); /* the failing message counts as consumed */
                return -1;
            }
            Py_DECREF(result);
        }
        ls_rb_consume(rb, (size_t)scanned);
        total += n;
        if (n < want)
        {
            break;
        }
    }
    return total;
}

/* controlled_read: one batch; the handler's ControlledAction decides what is consumed. */
static Py_ssize_t ring_controlled_read(RingReadObject *self, ls_ring_buffer_t *rb, PyObject *handler, long limit)
{
    int64_t end = 0;
    const int64_t n = ls_rb_scan(
        rb, self->types, self->offsets, self->lengths, self->consumed, limit < RING_BATCH ? limit : RING_BATCH, &end);
    if (n < 0)
    {
        return -2;
    }
    int64_t done = 0; /* bytes consumed already in this call */
    Py_ssize_t handled = 0;
    for (int64_t i = 0; i < n; i++)
    {
        PyObject *result = ring_handle(self, rb, handler, i);
        if (NULL == result)
        {
            ls_rb_consume(rb, (size_t)(self->consumed[handled] - done));
            return -1;
        }
        const long action = ls_fast_action(result);
        Py_DECREF(result);
        if (LS_RB_ABORT == action)
        {
            end = i > 0 ? self->consumed[i - 1] : 0;
            break;
        }
        handled++;
        if (LS_RB_BREAK == action)
        {
            end = self->consumed[i];
            break;
        }
        if (LS_RB_COMMIT == action)
        {
            ls_rb_consume(rb, (size_t)(self->consumed[i] - done));
            done = self->consumed[i];
        }
    }
    if (end > done)
    {
        ls_rb_consume(rb, (size_t)(end - done));
    }
    return handled;
}

static PyObject *ring_read_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RingReadObject *self = (RingReadObject *)callable;
    ls_ring_buffer_t *rb = self->head.target;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    long limit = RING_NO_LIMIT;
    if (NULL == rb || NULL != kwnames || nargs < 1 || nargs > 2)
    {
        return PyObject_Vectorcall(self->head.refs[RING_FALLBACK], args, nargsf, kwnames);
    }
    if (2 == nargs)
    {
        limit = PyLong_AsLong(args[1]);
        if (-1 == limit && PyErr_Occurred())
        {
            PyErr_Clear();
            return PyObject_Vectorcall(self->head.refs[RING_FALLBACK], args, nargsf, NULL);
        }
    }
    if (limit <= 0)
    {
        return PyLong_FromLong(0);
    }
    ls_fast_enter(&self->head);
    const Py_ssize_t n =
        self->controlled ? ring_controlled_read(self, rb, args[0], limit) : ring_read(self, rb, args[0], limit);
    if (ls_fast_leave(&self->head, -1 == n) < 0)
    {
        return NULL;
    }
    if (-2 == n)
    {
        return PyObject_Vectorcall(self->head.refs[RING_FALLBACK], args, nargsf, NULL);
    }
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *ring_new(PyTypeObject *type, PyObject *args, PyObject *kwargs, vectorcallfunc vectorcall, int is_read)
{
    PyObject *buffer, *fallback, *finish = NULL;
    static char *read_names[] = { "ring", "fallback", "controlled", "finish", NULL };
    static char *write_names[] = { "ring", "fallback", NULL };
    int flag = 0;
    if (!(is_read ? PyArg_ParseTupleAndKeywords(args, kwargs, "OO|pO:RingRead", read_names, &buffer, &fallback, &flag,
                                                &finish)
                  : PyArg_ParseTupleAndKeywords(args, kwargs, "OO:RingWrite", write_names, &buffer, &fallback)))
    {
        return NULL;
    }
    ls_ring_buffer_t *rb = ls_fast_buffer_address(buffer, (Py_ssize_t)sizeof(ls_ring_buffer_t), "ls_ring_buffer_t");
    if (NULL == rb)
    {
        return NULL;
    }
    PyObject *refs[] = { buffer, fallback };
    PyObject *self = ls_fast_alloc(type, vectorcall, rb, refs, 2);
    if (NULL != self && ls_fast_set_finish((LsFastHead *)self, finish) < 0)
    {
        Py_CLEAR(self);
    }
    if (NULL != self && is_read)
    {
        ((RingReadObject *)self)->controlled = flag;
    }
    return self;
}

static PyObject *ring_write_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return ring_new(type, args, kwargs, ring_write_vectorcall, 0);
}

static PyObject *ring_read_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return ring_new(type, args, kwargs, ring_read_vectorcall, 1);
}

static PyMethodDef ring_methods[] = {
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef ring_read_getset[] = {
    LS_FAST_BUSY_GETSET,
    { NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject RingWriteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.RingWrite",
    .tp_doc = "write(msg_type_id, data) -> True, or False when the ring is full.",
    LS_FAST_TYPE_COMMON(LsFastHead),
    .tp_new = ring_write_new,
    .tp_methods = ring_methods,
};

static PyTypeObject RingReadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.RingRead",
    .tp_doc = "read(handler, limit) / controlled_read(handler, limit) -> messages handed to handler(msg_type_id, data).",
    LS_FAST_TYPE_COMMON(RingReadObject),
    .tp_new = ring_read_new,
    .tp_methods = ring_methods,
    .tp_getset = ring_read_getset,
};

int ls_fast_register_ring(PyObject *module)
{
    if (ls_fast_add_type(module, &RingWriteType, "RingWrite") < 0 ||
        ls_fast_add_type(module, &RingReadType, "RingRead") < 0)
    {
        return -1;
    }
    return 0;
}
