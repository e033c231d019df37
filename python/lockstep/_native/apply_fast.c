/* A replica's apply loop in C: SequencedApply is both `Replica.apply(payload, position)` and the
 * handler a poll calls with (data, header). Per message it unpacks the sequencer's header, skips
 * what is already applied, sets the machine's Context (a ContextBase: five C integers, made Python
 * ints only when the machine reads them), copies the command to bytes and calls
 * machine.on_message(ctx, command); then it keeps the replica's
 * counters (last sequence and position, applied, own outputs seen) and calls back into Python
 * only when there is more to do: outputs to queue, a hash or snapshot due. A short payload, a
 * sequence gap or odd arguments go to the Python apply (the fallback), which raises as before. */
#include "fastpath.h"

#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define SEQUENCED_HEADER_LENGTH 32 /* sequence, timestamp ns, origin sequence (int64), origin id, reserved (int32) */

/* -- ContextBase: what a machine may know of the message being applied --------------------- */

enum ctx_field
{
    C_SEQUENCE,
    C_POSITION,
    C_TIMESTAMP,
    C_ORIGIN_ID,
    C_ORIGIN_SEQUENCE,
    C_COUNT
};

typedef struct
{
    PyObject_HEAD
    long long values[C_COUNT];
} ContextObject;

static PyObject *context_get(ContextObject *self, void *closure)
{
    return PyLong_FromLongLong(self->values[(intptr_t)closure]);
}

static int context_set(ContextObject *self, PyObject *value, void *closure)
{
    if (NULL == value)
    {
        PyErr_SetString(PyExc_AttributeError, "a Context's fields cannot be deleted");
        return -1;
    }
    const long long v = PyLong_AsLongLong(value);
    if (-1 == v && PyErr_Occurred())
    {
        return -1;
    }
    self->values[(intptr_t)closure] = v;
    return 0;
}

#define CONTEXT_FIELD(name, field, doc) { name, (getter)context_get, (setter)context_set, doc, (void *)(intptr_t)field }

static PyGetSetDef context_getset[] = {
    CONTEXT_FIELD("sequence", C_SEQUENCE, "the message's sequence in the log (1, 2, ...)"),
    CONTEXT_FIELD("position", C_POSITION, "the log position just after the message"),
    CONTEXT_FIELD("timestamp_ns", C_TIMESTAMP, "the sequencer's timestamp: the only clock a machine reads"),
    CONTEXT_FIELD("origin_id", C_ORIGIN_ID, "who sent the command"),
    CONTEXT_FIELD("origin_sequence", C_ORIGIN_SEQUENCE, "the sender's own number of the command"),
    { NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject ContextBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.ContextBase",
    .tp_doc = "The sequenced header of the message being applied, as C integers (see cluster.replica.Context).",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_getset = context_getset,
};

/* -- SequencedApply --------------------------------------------------------------------------- */

enum
{
    APPLY_MACHINE,     /* its on_message is looked up per call (a replay swaps machines) */
    APPLY_CTX,         /* the Context (a ContextBase) handed to on_message */
    APPLY_AFTER,       /* (hash_due) -> None: outputs, the hash, a due snapshot (Python) */
    APPLY_FALLBACK,    /* the Python apply(payload, position) */
    APPLY_SPARE,       /* the last command's bytes, reused while nobody else holds them (apply_command) */
    APPLY_REFS
};

typedef struct
{
    LsFastHead head;      /* refs: see the enum above; target: itself (no C struct of its own) */
    Py_ssize_t outputs;   /* offset of the Context's `_outputs` slot */
    long long last_sequence;
    long long last_position;
    long long applied;
    long long own_sequenced; /* highest origin sequence of our own outputs seen in the log */
    long long hash_every;    /* 0: never */
    long long snapshot_every;
    int origin_id;
    int snapshot_due;
} ApplyObject;

static PyObject *on_message_name;
static PyObject *position_name;

static int64_t load_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
    {
        v = (v << 8) | p[i];
    }
    return (int64_t)v;
}

/* The command as bytes: the last command's object again when this holds its only reference and
 * it is as long (a machine that kept it holds another: it gets a new one), else a new object, kept
 * for next time. Unobservable (nobody else can reach a bytes object we hold alone; bytes have no
 * weak references), it saves an allocation a message for fixed-size commands. */
static PyObject *apply_command(ApplyObject *self, const uint8_t *data, Py_ssize_t length)
{
#ifndef Py_GIL_DISABLED /* (free-threaded builds: a reference count of 1 is not a proof) */
    PyObject *spare = self->head.refs[APPLY_SPARE];
    if (NULL != spare && 1 == Py_REFCNT(spare) && PyBytes_GET_SIZE(spare) == length)
    {
        memcpy(PyBytes_AS_STRING(spare), data, (size_t)length);
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"")
        ((PyBytesObject *)spare)->ob_shash = -1; /* its hash, if one was taken, is another's */
        _Pragma("GCC diagnostic pop")
        return Py_NewRef(spare);
    }
#endif
    PyObject *command = PyBytes_FromStringAndSize((const char *)data, length);
    if (NULL != command && length > 1) /* (0 and 1 bytes: shared singletons) */
    {
        Py_XSETREF(self->head.refs[APPLY_SPARE], Py_NewRef(command));
    }
    return command;
}

/* The Python apply(payload, position), the position an int (a header's, when a poll called us):
 * `position`, or when NULL one made of `at`; takes the reference to `position`. */
static PyObject *apply_fallback(ApplyObject *self, PyObject *payload, PyObject *position, long long at)
{
    if (NULL == position && NULL == (position = PyLong_FromLongLong(at)))
    {
        return NULL;
    }
    PyObject *args[2] = { payload, position };
    PyObject *result = PyObject_Vectorcall(self->head.refs[APPLY_FALLBACK], args, 2, NULL);
    Py_DECREF(position);
    return result;
}

static PyObject *apply_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ApplyObject *self = (ApplyObject *)callable;
    PyObject *const *refs = self->head.refs;
    if (NULL == refs[APPLY_MACHINE] || NULL == refs[APPLY_CTX] || NULL == refs[APPLY_AFTER] || NULL == refs[APPLY_FALLBACK])
    {
        PyErr_SetString(PyExc_ValueError, "SequencedApply: no machine (deleted, or cleared by the garbage collector)");
        return NULL;
    }
    if (NULL != kwnames || 2 != PyVectorcall_NARGS(nargsf))
    {
        return PyObject_Vectorcall(self->head.refs[APPLY_FALLBACK], args, nargsf, kwnames);
    }
    /* position: a poll's Header (the handler: read in C, no Python int made unless a fallback
     * needs one), an int (apply), or another header (its `position`) */
    long long at = 0;
    PyObject *position = NULL;
    if (!ls_fast_header_position(args[1], &at))
    {
        position = PyLong_CheckExact(args[1]) ? Py_NewRef(args[1]) : PyObject_GetAttr(args[1], position_name);
        if (NULL == position)
        {
            return NULL;
        }
        at = PyLong_AsLongLong(position);
        if (-1 == at && PyErr_Occurred())
        {
            PyErr_Clear();
            return apply_fallback(self, args[0], position, 0);
        }
    }
    Py_buffer view;
    if (Py_IS_TYPE(args[0], &PyMemoryView_Type) && !(((PyMemoryViewObject *)args[0])->flags & _Py_MEMORYVIEW_RELEASED) &&
        !(((PyMemoryViewObject *)args[0])->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED) &&
        PyBuffer_IsContiguous(&((PyMemoryViewObject *)args[0])->view, 'C'))
    {
        view = ((PyMemoryViewObject *)args[0])->view; /* a poll's view: read in place, no export */
        view.obj = NULL;                               /* (so PyBuffer_Release leaves it alone) */
    }
    else if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
    {
        PyErr_Clear();
        return apply_fallback(self, args[0], position, at);
    }
    const uint8_t *data = (const uint8_t *)view.buf;
    const long long sequence = view.len < SEQUENCED_HEADER_LENGTH ? 0 : load_i64(data);
    if (view.len < SEQUENCED_HEADER_LENGTH || (sequence > self->last_sequence && 0 != self->last_sequence &&
                                               sequence != self->last_sequence + 1))
    {
        PyBuffer_Release(&view);
        return apply_fallback(self, args[0], position, at); /* too short, or a gap: it raises */
    }
    Py_XDECREF(position);
    if (sequence <= self->last_sequence)
    {
        PyBuffer_Release(&view);
        Py_RETURN_NONE; /* already in the restored state */
    }
    ContextObject *ctx = (ContextObject *)self->head.refs[APPLY_CTX];
    ctx->values[C_SEQUENCE] = sequence;
    ctx->values[C_POSITION] = at;
    ctx->values[C_TIMESTAMP] = load_i64(data + 8);
    ctx->values[C_ORIGIN_SEQUENCE] = load_i64(data + 16);
    ctx->values[C_ORIGIN_ID] = (int32_t)(uint32_t)((uint64_t)load_i64(data + 24) & 0xFFFFFFFFu);
    PyObject *command = apply_command(self, data + SEQUENCED_HEADER_LENGTH, view.len - SEQUENCED_HEADER_LENGTH);
    PyBuffer_Release(&view); /* copied out: the machine only ever sees its own bytes */
    if (NULL == command)
    {
        return NULL;
    }
    if (ctx->values[C_ORIGIN_ID] == self->origin_id && ctx->values[C_ORIGIN_SEQUENCE] > self->own_sequenced)
    {
        self->own_sequenced = ctx->values[C_ORIGIN_SEQUENCE]; /* our output, sequenced (maybe another replica's) */
    }
    PyObject *call[3] = { self->head.refs[APPLY_MACHINE], self->head.refs[APPLY_CTX], command };
    PyObject *result = PyObject_VectorcallMethod(on_message_name, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(command);
    if (NULL == result)
    {
        return NULL;
    }
    Py_DECREF(result);
    self->last_sequence = sequence;
    self->last_position = at;
    self->applied++;
    PyObject *outputs = *(PyObject **)((char *)self->head.refs[APPLY_CTX] + self->outputs);
    const int hash_due = self->hash_every > 0 && 0 == sequence % self->hash_every;
    if (self->snapshot_every > 0 && 0 == sequence % self->snapshot_every)
    {
        self->snapshot_due = 1;
    }
    if (hash_due || self->snapshot_due || NULL == outputs || !PyList_CheckExact(outputs) || PyList_GET_SIZE(outputs))
    {
        return PyObject_CallOneArg(self->head.refs[APPLY_AFTER], hash_due ? Py_True : Py_False);
    }
    Py_RETURN_NONE;
}

/* Where the Context keeps `name`: the offset of its __slots__ member, or -1 with TypeError. */
static Py_ssize_t slot_offset(PyObject *ctx, const char *name)
{
    if (!PyObject_TypeCheck(ctx, &ContextBaseType))
    {
        PyErr_Format(PyExc_TypeError, "SequencedApply: ctx must be a ContextBase, found %.100s", Py_TYPE(ctx)->tp_name);
        return -1;
    }
    PyObject *descr = PyObject_GetAttrString((PyObject *)Py_TYPE(ctx), name);
    Py_ssize_t offset = -1;
    if (NULL != descr && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
        T_OBJECT_EX == ((PyMemberDescrObject *)descr)->d_member->type)
    {
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_XDECREF(descr);
    if (offset < 0)
    {
        PyErr_Format(PyExc_TypeError, "SequencedApply: ctx (%.100s) must keep %s in a __slots__ slot",
                     Py_TYPE(ctx)->tp_name, name);
    }
    return offset;
}

static PyObject *apply_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *machine, *ctx, *after, *fallback;
    int origin_id;
    static char *names[] = { "machine", "ctx", "origin_id", "after", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOiOO:SequencedApply", names, &machine, &ctx, &origin_id, &after,
            &fallback))
    {
        return NULL;
    }
    const Py_ssize_t outputs = slot_offset(ctx, "_outputs");
    if (outputs < 0)
    {
        return NULL;
    }
    PyObject *refs[APPLY_REFS] = { machine, ctx, after, fallback, NULL };
    ApplyObject *self = (ApplyObject *)ls_fast_alloc(type, apply_vectorcall, NULL, refs, APPLY_REFS);
    if (NULL == self)
    {
        return NULL;
    }
    self->head.target = self; /* attached: no C struct of its own */
    self->origin_id = origin_id;
    self->outputs = outputs;
    return (PyObject *)self;
}

static PyMemberDef apply_members[] = {
    { "machine", T_OBJECT_EX, offsetof(ApplyObject, head.refs[APPLY_MACHINE]), 0, "the state machine messages are applied to" },
    { "last_sequence", T_LONGLONG, offsetof(ApplyObject, last_sequence), 0, "sequence of the last message applied" },
    { "last_position", T_LONGLONG, offsetof(ApplyObject, last_position), 0, "position of the last message applied" },
    { "applied", T_LONGLONG, offsetof(ApplyObject, applied), 0, "messages applied" },
    { "own_sequenced", T_LONGLONG, offsetof(ApplyObject, own_sequenced), 0,
      "highest origin sequence of our own outputs seen in the log" },
    { "hash_every", T_LONGLONG, offsetof(ApplyObject, hash_every), 0, "a state hash every N sequences (0: none)" },
    { "snapshot_every", T_LONGLONG, offsetof(ApplyObject, snapshot_every), 0,
      "a snapshot every N sequences (0: none)" },
    { "snapshot_due", T_INT, offsetof(ApplyObject, snapshot_due), 0, "a snapshot waits for its outputs" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject ApplyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.SequencedApply",
    .tp_doc = "SequencedApply(machine, ctx, origin_id, after, fallback): apply(payload, position or header).",
    LS_FAST_TYPE_COMMON(ApplyObject),
    .tp_new = apply_new,
    .tp_members = apply_members,
};

int ls_fast_register_apply(PyObject *module)
{
    on_message_name = PyUnicode_InternFromString("on_message");
    position_name = PyUnicode_InternFromString("position");
    if (NULL == on_message_name || NULL == position_name)
    {
        return -1;
    }
    if (ls_fast_add_type(module, &ContextBaseType, "ContextBase") < 0)
    {
        return -1;
    }
    return ls_fast_add_type(module, &ApplyType, "SequencedApply");
}
