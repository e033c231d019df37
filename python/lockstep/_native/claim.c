/* try_claim in C for publications and rings: TryClaim is one C entry that claims and hands
 * back a Claim, reusing the previous one of the publication/ring once it is finished and no
 * longer referenced; Claim.commit()/abort() are C. A granted claim holds an export of the mapping
 * until it is finished, so commit after close() never writes to unmapped memory; failures,
 * errors and odd arguments go to the Python fallback (publication.py / ring.py). */
#include "fastpath.h"

#include <structmember.h>

#include "lockstep.h"

enum claim_kind
{
    CLAIM_PUBLICATION,
    CLAIM_RING
};

typedef struct
{
    PyObject_HEAD
    int kind;
    int granted;              /* truthiness: space was claimed */
    int done;                 /* committed or aborted (or never granted) */
    int32_t index;            /* ring: the claimed payload's index */
    long long status;         /* publication: position after the claim, or a negative status */
    ls_buffer_claim_t claim;  /* publication */
    PyObject *buffer;         /* the writable view of the claimed payload, or None */
    PyObject *source;         /* ring: the TryClaim (its target is NULL once the ring closed) */
    PyObject *on_error;       /* (what) -> raises: "finished", "closed", "c" (the C error) */
    Py_buffer mapping;        /* an export of the mapping while granted and not finished */
    int holding;
} ClaimObject;

static PyObject *claim_fail(ClaimObject *self, const char *what)
{
    PyObject *result = PyObject_CallFunction(self->on_error, "s", what);
    Py_XDECREF(result);
    if (NULL != result)
    {
        PyErr_Format(PyExc_RuntimeError, "claim: on_error(%s) did not raise", what);
    }
    return NULL;
}

static void claim_release_buffer(ClaimObject *self)
{
    ls_fast_view_release(self->buffer); /* a view something was exported from stays */
    if (self->holding)
    {
        self->holding = 0;
        PyBuffer_Release(&self->mapping);
    }
}

static PyObject *claim_finish(ClaimObject *self, int abort)
{
    if (self->done)
    {
        return claim_fail(self, "finished");
    }
    self->done = 1;
    int rc;
    if (CLAIM_PUBLICATION == self->kind)
    {
        rc = abort ? ls_buffer_claim_abort(&self->claim) : ls_buffer_claim_commit(&self->claim);
    }
    else
    {
        ls_ring_buffer_t *rb = ((LsFastHead *)self->source)->target;
        if (NULL == rb)
        {
            claim_release_buffer(self);
            return claim_fail(self, "closed");
        }
        rc = abort ? ls_rb_abort(rb, self->index) : ls_rb_commit(rb, self->index);
    }
    claim_release_buffer(self); /* last: the export keeps the frame mapped until here */
    if (rc < 0)
    {
        return claim_fail(self, "c");
    }
    Py_RETURN_NONE;
}

static PyObject *claim_commit(ClaimObject *self, PyObject *Py_UNUSED(ignored))
{
    return claim_finish(self, 0);
}

static PyObject *claim_abort(ClaimObject *self, PyObject *Py_UNUSED(ignored))
{
    return claim_finish(self, 1);
}

static int claim_bool(ClaimObject *self)
{
    return self->granted;
}

static PyObject *claim_get_buffer(ClaimObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->buffer);
}

static PyObject *claim_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    long long status;
    PyObject *on_error;
    static char *names[] = { "status", "on_error", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LO:Claim", names, &status, &on_error))
    {
        return NULL;
    }
    ClaimObject *self = (ClaimObject *)type->tp_alloc(type, 0);
    if (NULL != self)
    {
        self->done = 1; /* a claim that was not granted: nothing to finish */
        self->status = status;
        self->buffer = Py_NewRef(Py_None);
        self->on_error = Py_NewRef(on_error);
    }
    return (PyObject *)self;
}

static int claim_traverse(ClaimObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buffer);
    Py_VISIT(self->source);
    Py_VISIT(self->on_error);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int claim_clear(ClaimObject *self)
{
    if (self->holding)
    {
        self->holding = 0;
        PyBuffer_Release(&self->mapping);
    }
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->source);
    Py_CLEAR(self->on_error);
    return 0;
}

static void claim_dealloc(ClaimObject *self)
{
    PyObject_GC_UnTrack(self);
    claim_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef claim_members[] = {
    { "status", T_LONGLONG, offsetof(ClaimObject, status), READONLY,
      "the position after the claim, or a negative status (publications)" },
    { "index", T_INT, offsetof(ClaimObject, index), READONLY, "where the payload is in the ring (rings)" },
    { "_done", T_INT, offsetof(ClaimObject, done), READONLY, "committed, aborted or never granted" },
    { NULL, 0, 0, 0, NULL },
};

static PyGetSetDef claim_getset[] = {
    { "buffer", (getter)claim_get_buffer, NULL, "the claimed payload to fill (writable view), or None", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMethodDef claim_methods[] = {
    { "commit", (PyCFunction)claim_commit, METH_NOARGS, "Publish the claimed message." },
    { "abort", (PyCFunction)claim_abort, METH_NOARGS, "Give the space back as padding readers skip." },
    { NULL, NULL, 0, NULL },
};

static PyNumberMethods claim_as_number = {
    .nb_bool = (inquiry)claim_bool,
};

static PyTypeObject ClaimType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Claim",
    .tp_doc = "Claim(status, on_error): space claimed by try_claim; truthy when granted. Fill `buffer`, "
              "then commit() or abort().",
    .tp_basicsize = sizeof(ClaimObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = claim_new,
    .tp_traverse = (traverseproc)claim_traverse,
    .tp_clear = (inquiry)claim_clear,
    .tp_dealloc = (destructor)claim_dealloc,
    .tp_members = claim_members,
    .tp_getset = claim_getset,
    .tp_methods = claim_methods,
    .tp_as_number = &claim_as_number,
};

/* -- TryClaim: pub.try_claim(length) / ring.try_claim(msg_type_id, length) ---------------- */

enum { TC_STRUCT, TC_EXPORTER, TC_FALLBACK, TC_CLAIM_TYPE, TC_ON_ERROR, TC_FAILED, TC_CACHED, TC_CACHED_2 };

typedef struct
{
    LsFastHead head; /* target: the ls_publication_t or ls_ring_buffer_t; refs: see the enum */
    int kind;
} TryClaimObject;

/* The claim to fill: one of the two cached ones that is finished and held by nobody else (a
 * caller may keep a finished claim to read its position later: that one stays as it is; two,
 * so that `claim = pub.try_claim(n)` in a loop, which still holds the previous claim while it
 * asks for the next, alternates between them), else a new one, cached in place of the other. */
static ClaimObject *try_claim_slot(TryClaimObject *self)
{
    for (int slot = TC_CACHED; slot <= TC_CACHED_2; slot++)
    {
        ClaimObject *claim = (ClaimObject *)self->head.refs[slot];
        if (NULL != claim && claim->done && 1 == Py_REFCNT(claim))
        {
            return claim;
        }
    }
    PyTypeObject *type = (PyTypeObject *)self->head.refs[TC_CLAIM_TYPE];
    ClaimObject *claim = (ClaimObject *)type->tp_alloc(type, 0);
    if (NULL == claim)
    {
        return NULL;
    }
    claim->kind = self->kind;
    claim->done = 1;
    claim->buffer = Py_NewRef(Py_None);
    claim->on_error = Py_NewRef(self->head.refs[TC_ON_ERROR]);
    claim->source = CLAIM_RING == self->kind ? Py_NewRef((PyObject *)self) : NULL;
    Py_XSETREF(self->head.refs[TC_CACHED_2], self->head.refs[TC_CACHED]);
    self->head.refs[TC_CACHED] = (PyObject *)claim;
    return claim;
}

/* Marks `claim` granted over data[0:length]; a new reference to it, or NULL. */
static PyObject *try_claim_grant(TryClaimObject *self, ClaimObject *claim, uint8_t *data, Py_ssize_t length)
{
    if (PyObject_GetBuffer(self->head.refs[TC_EXPORTER], &claim->mapping, PyBUF_SIMPLE) < 0)
    {
        return NULL;
    }
    PyObject *view = ls_fast_view(&claim->buffer, data, length, 1); /* claim->buffer holds it */
    if (NULL == view)
    {
        PyBuffer_Release(&claim->mapping);
        return NULL;
    }
    Py_DECREF(view);
    claim->holding = 1;
    claim->granted = 1;
    claim->done = 0;
    return Py_NewRef((PyObject *)claim);
}

static int int32_arg(PyObject *arg, int32_t *out)
{
    const long value = PyLong_AsLong(arg);
    if ((-1 == value && PyErr_Occurred()) || value < INT32_MIN || value > INT32_MAX)
    {
        PyErr_Clear();
        return 0;
    }
    *out = (int32_t)value;
    return 1;
}

/* One attempt: a granted claim, or the (int) status. */
static PyObject *try_claim_publication(TryClaimObject *self, int32_t length)
{
    ClaimObject *claim = try_claim_slot(self);
    if (NULL == claim)
    {
        return NULL;
    }
    const int64_t result = ls_publication_try_claim(self->head.target, length, &claim->claim);
    if (result <= 0)
    {
        return PyLong_FromLongLong(result);
    }
    claim->status = result;
    return try_claim_grant(self, claim, claim->claim.data, claim->claim.length);
}

static PyObject *try_claim_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TryClaimObject *self = (TryClaimObject *)callable;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *fallback = self->head.refs[TC_FALLBACK];
    int32_t type_id = 0, length;
    if (NULL == self->head.target || NULL != kwnames || nargs != (CLAIM_RING == self->kind ? 2 : 1) ||
        !int32_arg(args[nargs - 1], &length) || (2 == nargs && !int32_arg(args[0], &type_id)))
    {
        return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
    }
    if (CLAIM_PUBLICATION == self->kind)
    {
        PyObject *got = try_claim_publication(self, length);
        if (NULL == got || !PyLong_CheckExact(got))
        {
            return got;
        }
        /* Not connected, back-pressured, an error...: Python re-checks subscribers and retries
         * (through attempt()), or raises with the C error. Nothing was claimed. */
        PyObject *call[2] = { args[0], got };
        PyObject *result = PyObject_Vectorcall(self->head.refs[TC_FAILED], call, 2, NULL);
        Py_DECREF(got);
        return result;
    }
    if (length < 0)
    {
        return PyObject_Vectorcall(fallback, args, nargsf, NULL); /* says what is wrong */
    }
    ls_ring_buffer_t *rb = self->head.target;
    const int32_t index = ls_rb_try_claim(rb, type_id, (size_t)length);
    if (LS_RB_FULL == index)
    {
        Py_RETURN_NONE;
    }
    if (index < 0)
    {
        PyObject *result = PyObject_CallFunction(self->head.refs[TC_ON_ERROR], "s", "c"); /* raises */
        Py_XDECREF(result);
        return NULL == result ? NULL : PyErr_Format(PyExc_RuntimeError, "claim: on_error(c) did not raise");
    }
    ClaimObject *claim = try_claim_slot(self);
    if (NULL == claim)
    {
        ls_rb_abort(rb, index);
        return NULL;
    }
    claim->index = index;
    PyObject *granted = try_claim_grant(self, claim, rb->buffer + index, length);
    if (NULL == granted)
    {
        ls_rb_abort(rb, index);
    }
    return granted;
}

static PyObject *try_claim_attempt(TryClaimObject *self, PyObject *arg)
{
    if (NULL == self->head.target || CLAIM_PUBLICATION != self->kind)
    {
        PyErr_SetString(PyExc_ValueError, "attempt(length): for an open publication");
        return NULL;
    }
    const long length = PyLong_AsLong(arg);
    if (-1 == length && PyErr_Occurred())
    {
        return NULL;
    }
    if (length < INT32_MIN || length > INT32_MAX)
    {
        return PyErr_Format(PyExc_OverflowError, "length: expected an int32, found %ld", length);
    }
    return try_claim_publication(self, (int32_t)length);
}

static PyObject *try_claim_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *target, *view, *fallback, *claim_type, *on_error, *failed = Py_None;
    int ring = 0;
    static char *names[] = { "target", "view", "fallback", "claim_type", "on_error", "failed", "ring", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|Op:TryClaim", names, &target, &view, &fallback,
                                     &claim_type, &on_error, &failed, &ring))
    {
        return NULL;
    }
    void *address = ring ?
        ls_fast_buffer_address(target, (Py_ssize_t)sizeof(ls_ring_buffer_t), "ls_ring_buffer_t") :
        ls_fast_buffer_address(target, (Py_ssize_t)sizeof(ls_publication_t), "ls_publication_t");
    if (NULL == address)
    {
        return NULL;
    }
    if (!PyMemoryView_Check(view) || NULL == PyMemoryView_GET_BUFFER(view)->obj)
    {
        return PyErr_Format(PyExc_TypeError, "view: expected a memoryview of the mapping");
    }
    if (!PyType_Check(claim_type) || !PyType_IsSubtype((PyTypeObject *)claim_type, &ClaimType))
    {
        return PyErr_Format(PyExc_TypeError, "claim_type: expected Claim or a subclass");
    }
    if (!ring && !PyCallable_Check(failed))
    {
        return PyErr_Format(PyExc_TypeError, "failed: expected (length, status) -> Claim for a publication");
    }
    PyObject *refs[] = { target, PyMemoryView_GET_BUFFER(view)->obj, fallback, claim_type, on_error, failed };
    TryClaimObject *self = (TryClaimObject *)ls_fast_alloc(type, try_claim_vectorcall, address, refs, 6);
    if (NULL != self)
    {
        self->kind = ring ? CLAIM_RING : CLAIM_PUBLICATION;
    }
    return (PyObject *)self;
}

static PyMethodDef try_claim_methods[] = {
    LS_FAST_DETACH_METHOD,
    { "attempt", (PyCFunction)try_claim_attempt, METH_O,
      "One publication claim, no fallback: a granted Claim, or the status (int)." },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject TryClaimType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.TryClaim",
    .tp_doc = "try_claim(length) / try_claim(msg_type_id, length) -> a (reused) Claim.",
    LS_FAST_TYPE_COMMON(TryClaimObject),
    .tp_new = try_claim_new,
    .tp_methods = try_claim_methods,
};

int ls_fast_register_claim(PyObject *module)
{
    if (ls_fast_add_type(module, &ClaimType, "Claim") < 0 || ls_fast_add_type(module, &TryClaimType, "TryClaim") < 0)
    {
        return -1;
    }
    return 0;
}
