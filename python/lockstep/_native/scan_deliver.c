/* TermScanDeliver: one term of a recording reader's poll in C (RecordingReader.poll). The term
 * reader's scan (ls_term_scan: frame checks, padding, reassembly), then each message it found
 * handed to the handler (vectorcall) with a zero-copy read-only view of the mapped segment (or
 * of the assembler's buffer), released after the call, and the one Header over the scan. The
 * reader's position is this object's and moves per message, consumed whatever the handler
 * does: a handler that raises has its message consumed, and the messages after it in the scan
 * are left for the next poll to find again. Following a live recording, a corrupt frame's
 * error and a close stay in the Python poll around it; while the call is in flight (`busy`) the
 * reader's teardown waits, and `finish` runs it when a call that was closed under returns. */
#include "fastpath.h"

#include <structmember.h> /* PyMemberDef, T_LONGLONG (3.11) */

#include "lockstep.h"

enum
{
    DELIVER_TERM,      /* ffi.buffer of the ls_term_t: keeps it alive */
    DELIVER_SCAN,      /* ffi.buffer of the ls_term_scan_t */
    DELIVER_ASSEMBLER, /* ffi.buffer of the ls_fragment_assembler_t */
    DELIVER_HEADER,    /* the Header over the scan */
    DELIVER_VIEW,      /* the reused view (ls_fast_view) */
    DELIVER_REFS
};

typedef struct
{
    LsFastHead head; /* target: the ls_term_t (term length, mtu, session, stream: the recording's) */
    ls_term_scan_t *scan;
    ls_fragment_assembler_t *assembler;
    LsHeaderObject *header;
    int32_t initial_term_id;
    long long position; /* the reader's position: after the last message consumed */
} TermScanDeliverObject;

/* The term id of the term holding `position` (segments.term_id_at). */
static int32_t deliver_term_id(const TermScanDeliverObject *self, int64_t position, int32_t term_length)
{
    const int shift = __builtin_ctz((unsigned int)term_length);
    return (int32_t)((uint32_t)self->initial_term_id + (uint32_t)(position >> shift));
}

/* Hands the scanned messages to handler from the term's first byte `base`, moving the position
 * before each call (a handler sees its message consumed). 0, or -1 with the handler's exception
 * (the position after its message) or the view's (the position before it). */
static int deliver_scanned(TermScanDeliverObject *self, const uint8_t *base, PyObject *handler)
{
    const ls_term_scan_t *scan = self->scan;
    for (int32_t i = 0; i < scan->count; i++)
    {
        const int32_t offset = scan->data_offsets[i];
        const uint8_t *data = offset >= 0 ? base + offset : self->assembler->buffer;
        const long long before = self->position;
        self->header->i = i;
        self->position = scan->headers[i].position;
        const int handed = ls_fast_hand(handler, &self->head.refs[DELIVER_VIEW], data, scan->lengths[i],
                                        (PyObject *)self->header, NULL);
        if (handed < 0)
        {
            if (-2 == handed)
            {
                self->position = before; /* not handed out: not consumed */
            }
            return -1;
        }
    }
    return 0;
}

/* deliver(segment, offset, limit, fragment_limit, handler) -> ls_term_scan's result: the messages
 * found and handed out (the position then where the scan stopped), or -1 when it stopped at a
 * corrupt frame (the C error set; the position at that frame, the messages before it handed out).
 * `segment` is a buffer of the segment file holding the position at file `offset`; `limit` the
 * stream position the reader may read up to. Detached: 0, nothing read. */
static PyObject *deliver_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TermScanDeliverObject *self = (TermScanDeliverObject *)callable;
    if (NULL != kwnames || 5 != PyVectorcall_NARGS(nargsf))
    {
        PyErr_SetString(PyExc_TypeError, "deliver(segment, offset, limit, fragment_limit, handler): expected 5 "
                                         "positional arguments");
        return NULL;
    }
    ls_term_t *term = self->head.target;
    if (NULL == term)
    {
        return PyLong_FromLong(0); /* closed: the reader's poll raises ClosedError or returns */
    }
    if (self->head.depth > 0)
    {
        PyErr_SetString(PyExc_RuntimeError, "RecordingReader.poll: already polling (from its handler, or another "
                                            "thread): the scan it reads from is in use");
        return NULL;
    }
    const Py_ssize_t file_offset = PyLong_AsSsize_t(args[1]);
    const long long limit = PyLong_AsLongLong(args[2]);
    const long fragment_limit = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
    {
        return NULL;
    }
    const int32_t term_length = term->term_length;
    const int64_t position = self->position;
    const int32_t term_offset = (int32_t)(position & (term_length - 1));
    const int64_t begin = position - term_offset;
    const Py_ssize_t term_at = file_offset - term_offset; /* the term's first byte in the segment */
    const int64_t limit_offset = limit - begin < term_length ? limit - begin : term_length;

    Py_buffer segment;
    if (PyObject_GetBuffer(args[0], &segment, PyBUF_SIMPLE) < 0)
    {
        return NULL;
    }
    if (term_at < 0 || segment.len - term_at < term_length || position < 0)
    {
        PyErr_Format(PyExc_ValueError, "deliver: position %lld at segment offset %zd: expected its term (%d bytes) "
                     "within the segment's %zd bytes", (long long)position, file_offset, term_length, segment.len);
        PyBuffer_Release(&segment);
        return NULL;
    }
    const uint8_t *base = (const uint8_t *)segment.buf + term_at;
    const int32_t limit_at = (int32_t)(limit_offset > 0 ? limit_offset : 0);
    const int32_t fragments =
        (int32_t)(fragment_limit < 0 ? 0 : fragment_limit > INT32_MAX ? INT32_MAX : fragment_limit);
    /* In flight from here: a second call meanwhile (the GIL released for the scan, which may wait on
     * the disk for the segment's pages; a handler) would overwrite the scan, so it is refused. */
    ls_fast_enter(&self->head);
    int32_t found;
    Py_BEGIN_ALLOW_THREADS
    term->buffer = base;
    term->begin_position = begin;
    term->term_id = deliver_term_id(self, position, term_length);
    found = ls_term_scan(term, term_offset, limit_at, fragments, self->assembler, self->scan);
    term->buffer = NULL;
    Py_END_ALLOW_THREADS

    const int failed = deliver_scanned(self, base, args[4]);
    if (!failed)
    {
        self->position = begin + self->scan->end_offset;
    }
    PyBuffer_Release(&segment); /* (before a deferred close's finish unmaps the segment) */
    return ls_fast_leave(&self->head, failed) < 0 ? NULL : PyLong_FromLong(found);
}

static PyObject *deliver_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *refs[DELIVER_REFS] = { NULL };
    PyObject *finish = NULL;
    int initial_term_id;
    long long position;
    static char *names[] = { "term", "scan", "assembler", "initial_term_id", "position", "finish", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOiL|O:TermScanDeliver", names, &refs[DELIVER_TERM],
                                     &refs[DELIVER_SCAN], &refs[DELIVER_ASSEMBLER], &initial_term_id, &position,
                                     &finish))
    {
        return NULL;
    }
    ls_term_t *term = ls_fast_buffer_address(refs[DELIVER_TERM], (Py_ssize_t)sizeof(ls_term_t), "ls_term_t");
    ls_term_scan_t *scan = NULL == term ? NULL :
        ls_fast_buffer_address(refs[DELIVER_SCAN], (Py_ssize_t)sizeof(ls_term_scan_t), "ls_term_scan_t");
    ls_fragment_assembler_t *assembler = NULL == scan ? NULL :
        ls_fast_buffer_address(refs[DELIVER_ASSEMBLER], (Py_ssize_t)sizeof(ls_fragment_assembler_t),
                               "ls_fragment_assembler_t");
    if (NULL == assembler)
    {
        return NULL;
    }
    if (term->term_length < LS_FRAME_ALIGNMENT || 0 != (term->term_length & (term->term_length - 1)))
    {
        return PyErr_Format(PyExc_ValueError, "term: term_length: expected a power of two, found %d",
                            term->term_length);
    }
    refs[DELIVER_HEADER] = ls_fast_header_new(refs[DELIVER_SCAN]);
    if (NULL == refs[DELIVER_HEADER])
    {
        return NULL;
    }
    TermScanDeliverObject *self =
        (TermScanDeliverObject *)ls_fast_alloc(type, deliver_vectorcall, term, refs, DELIVER_REFS);
    if (NULL != self && ls_fast_set_finish(&self->head, finish) < 0)
    {
        Py_CLEAR(self);
    }
    if (NULL != self)
    {
        self->scan = scan;
        self->assembler = assembler;
        self->header = (LsHeaderObject *)refs[DELIVER_HEADER]; /* owned through refs */
        self->initial_term_id = initial_term_id;
        self->position = position;
    }
    Py_DECREF(refs[DELIVER_HEADER]);
    return (PyObject *)self;
}

static PyGetSetDef deliver_getset[] = {
    LS_FAST_HEADER_GETSET(DELIVER_HEADER),
    LS_FAST_BUSY_GETSET,
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMemberDef deliver_members[] = {
    { "position", T_LONGLONG, offsetof(TermScanDeliverObject, position), 0,
      "the reader's position: after the last message consumed (each before its handler call)" },
    { NULL, 0, 0, 0, NULL },
};

static PyMethodDef deliver_methods[] = {
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyTypeObject TermScanDeliverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.TermScanDeliver",
    .tp_doc = "TermScanDeliver(ffi.buffer(term), ffi.buffer(scan), ffi.buffer(assembler), initial_term_id, "
              "position, finish=None): deliver(segment, offset, limit, fragment_limit, handler) -> messages of one term "
              "handed to handler(data, header), or -1 at a corrupt frame.",
    LS_FAST_TYPE_COMMON(TermScanDeliverObject),
    .tp_new = deliver_new,
    .tp_methods = deliver_methods,
    .tp_members = deliver_members,
    .tp_getset = deliver_getset,
};

int ls_fast_register_scan_deliver(PyObject *module)
{
    return ls_fast_add_type(module, &TermScanDeliverType, "TermScanDeliver");
}
