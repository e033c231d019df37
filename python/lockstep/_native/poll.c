/* poll(handler, fragment_limit) and controlled_poll in C: the scan (ls_image_scan_commit), the
 * loop across padding, fragments and term ends, and the handler call (vectorcall) with a zero-copy
 * read-only view of the payload and one reusable Header per image that points at the scan's
 * frame headers (nothing rebuilt per message). A handler that raises has its message consumed
 * (the position moves back to just after it); a closed reader and a corrupt frame go to the
 * Python fallback, which raises ClosedError / the C error naming the file. A controlled poll's
 * handler returns an action (Aeron's ControlledPollAction): ABORT leaves its message unread
 * (the position goes back to its frame; a reassembled one's to its END fragment, the assembler
 * keeping the others) and stops, BREAK consumes it and stops,
 * COMMIT stores the position past it at once, CONTINUE (or None) goes on. */
#include "fastpath.h"

#include <structmember.h>

#include "concurrent/ls_atomic.h"
#include "lockstep.h"
#include "util/ls_bitutil.h"

/* -- Header: the frame header of the message being handled (valid during the call) -------- */

typedef LsHeaderObject HeaderObject; /* (fastpath.h: scan_deliver.c sets i too) */

static PyTypeObject HeaderType;

enum header_field
{
    H_POSITION,
    H_SESSION_ID,
    H_STREAM_ID,
    H_TERM_ID,
    H_TERM_OFFSET,
    H_FLAGS,
    H_RESERVED_VALUE,
    H_FRAME_LENGTH,
    H_COUNT
};

static const char *const header_names[H_COUNT] = {
    "position", "session_id", "stream_id", "term_id", "term_offset", "flags", "reserved_value", "frame_length",
};

static long long header_value(const HeaderObject *self, int field)
{
    const ls_frame_header_t *h = &self->headers[self->i];
    switch (field)
    {
        case H_POSITION: return h->position;
        case H_SESSION_ID: return h->session_id;
        case H_STREAM_ID: return h->stream_id;
        case H_TERM_ID: return h->term_id;
        case H_TERM_OFFSET: return h->term_offset;
        case H_FLAGS: return h->flags;
        case H_RESERVED_VALUE: return h->reserved_value;
        default: return h->frame_length;
    }
}

static PyObject *header_get(HeaderObject *self, void *closure)
{
    return PyLong_FromLongLong(header_value(self, (int)(intptr_t)closure));
}

static PyObject *header_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *scan;
    static char *names[] = { "scan", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Header", names, &scan))
    {
        return NULL;
    }
    /* An image's scan, or a term's (the archive's recording reader): the same headers array. */
    const ls_frame_header_t *headers = NULL;
    ls_image_scan_t *image_scan = ls_fast_buffer_address(scan, (Py_ssize_t)sizeof(ls_image_scan_t), "ls_image_scan_t");
    if (NULL != image_scan)
    {
        headers = image_scan->headers;
    }
    else if (PyErr_ExceptionMatches(PyExc_ValueError))
    {
        PyErr_Clear();
        ls_term_scan_t *term_scan = ls_fast_buffer_address(
            scan, (Py_ssize_t)sizeof(ls_term_scan_t), "ls_term_scan_t (or ls_image_scan_t)");
        headers = NULL == term_scan ? NULL : term_scan->headers;
    }
    if (NULL == headers)
    {
        return NULL;
    }
    HeaderObject *self = (HeaderObject *)type->tp_alloc(type, 0);
    if (NULL != self)
    {
        self->headers = headers;
        self->owner = Py_NewRef(scan);
    }
    return (PyObject *)self;
}

static int header_traverse(HeaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    return 0;
}

static int header_clear(HeaderObject *self)
{
    Py_CLEAR(self->owner);
    return 0;
}

static void header_dealloc(HeaderObject *self)
{
    PyObject_GC_UnTrack(self);
    header_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

_Static_assert(LS_TERM_SCAN_CAPACITY == LS_IMAGE_SCAN_CAPACITY, "one bound for Header._i over either scan");

static int header_set_index(HeaderObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    const long i = NULL == value ? -1 : PyLong_AsLong(value);
    if (i < 0 || i >= LS_IMAGE_SCAN_CAPACITY)
    {
        if (!PyErr_Occurred())
        {
            PyErr_Format(PyExc_ValueError, "_i: expected 0..%d", LS_IMAGE_SCAN_CAPACITY - 1);
        }
        return -1;
    }
    self->i = (int)i;
    return 0;
}

static PyObject *header_get_index(HeaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->i);
}

static PyObject *header_as_dict(HeaderObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *dict = PyDict_New();
    for (int f = 0; NULL != dict && f < H_FRAME_LENGTH; f++) /* frame_length is not part of it */
    {
        PyObject *value = PyLong_FromLongLong(header_value(self, f));
        if (NULL == value || PyDict_SetItemString(dict, header_names[f], value) < 0)
        {
            Py_XDECREF(value);
            Py_CLEAR(dict);
            break;
        }
        Py_DECREF(value);
    }
    return dict;
}

static PyObject *header_repr(HeaderObject *self)
{
    return PyUnicode_FromFormat(
        "Header(position=%lld, session_id=%lld, stream_id=%lld, term_id=%lld, term_offset=%lld, flags=0x%02x)",
        header_value(self, H_POSITION), header_value(self, H_SESSION_ID), header_value(self, H_STREAM_ID),
        header_value(self, H_TERM_ID), header_value(self, H_TERM_OFFSET), (int)header_value(self, H_FLAGS));
}

static PyGetSetDef header_getset[] = {
    { "position", (getter)header_get, NULL, "stream position after the message", (void *)(intptr_t)H_POSITION },
    { "session_id", (getter)header_get, NULL, NULL, (void *)(intptr_t)H_SESSION_ID },
    { "stream_id", (getter)header_get, NULL, NULL, (void *)(intptr_t)H_STREAM_ID },
    { "term_id", (getter)header_get, NULL, "of the message's first frame", (void *)(intptr_t)H_TERM_ID },
    { "term_offset", (getter)header_get, NULL, "of the message's first frame", (void *)(intptr_t)H_TERM_OFFSET },
    { "flags", (getter)header_get, NULL, "0xC0 for a whole (or reassembled) message", (void *)(intptr_t)H_FLAGS },
    { "reserved_value", (getter)header_get, NULL, NULL, (void *)(intptr_t)H_RESERVED_VALUE },
    { "frame_length", (getter)header_get, NULL, "of the last frame", (void *)(intptr_t)H_FRAME_LENGTH },
    { "_i", (getter)header_get_index, (setter)header_set_index, "which scanned message is current", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMethodDef header_methods[] = {
    { "as_dict", (PyCFunction)header_as_dict, METH_NOARGS, "The fields (but frame_length) as a dict." },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject HeaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Header",
    .tp_doc = "The frame header of the message being handled (valid during the handler call).",
    .tp_basicsize = sizeof(HeaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = header_new,
    .tp_traverse = (traverseproc)header_traverse,
    .tp_clear = (inquiry)header_clear,
    .tp_dealloc = (destructor)header_dealloc,
    .tp_repr = (reprfunc)header_repr,
    .tp_getset = header_getset,
    .tp_methods = header_methods,
};

PyObject *ls_fast_header_new(PyObject *scan)
{
    return PyObject_CallOneArg((PyObject *)&HeaderType, scan);
}

int ls_fast_header_position(PyObject *obj, long long *position)
{
    if (!Py_IS_TYPE(obj, &HeaderType))
    {
        return 0;
    }
    *position = header_value((HeaderObject *)obj, H_POSITION);
    return 1;
}

/* -- Poll: image.poll(handler, limit=10) -> messages handled ------------------------------ */

enum { POLL_IMAGE, POLL_SCAN, POLL_RECEIVE, POLL_FALLBACK, POLL_HEADER, POLL_VIEW, POLL_FAILED };

typedef struct
{
    LsFastHead head;     /* target: the ls_image_t; refs: see the enum above (and LS_FAST_FINISH) */
    ls_image_scan_t *scan;
    int *peek;           /* the Receive object's peek hint (int32 index of the frame length) */
    int *polling;        /* the Receive object's flag: set while this poll's handlers run (a poll or
                          * receive of the image meanwhile raises) */
    HeaderObject *header;
    int unchecked;       /* views were handed out since the last check that they were intact */
    int deferred;        /* a log reclaimed behind the position (a media driver's): the scan path
                          * stores it after the handlers too (ls_image_scan_deferred) */
} PollObject;

static PyTypeObject PollType;

#define POLL_DEFAULT_LIMIT 10

/* The Python poll (closed: ClosedError); messages handled, or -1 with an exception. */
static Py_ssize_t poll_fallback(PollObject *self, PyObject *handler, long limit)
{
    PyObject *args[2] = { handler, PyLong_FromLong(limit) };
    if (NULL == args[1])
    {
        return -1;
    }
    PyObject *result = PyObject_Vectorcall(self->head.refs[POLL_FALLBACK], args, 2, NULL);
    Py_DECREF(args[1]);
    if (NULL == result)
    {
        return -1;
    }
    const Py_ssize_t n = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    return n;
}

/* A read failed with `status` (corrupt, LS_IMAGE_LAPPED, LS_IMAGE_NOT_OWNER; the C error text
 * still this thread's): the owner's `_failed(status)` raises (ImageLostError, the C error) or
 * tells the subscription's on_unavailable_image. 0 (nothing handed out), or -1. */
static Py_ssize_t poll_failed(PollObject *self, int status)
{
    PyObject *arg = PyLong_FromLong(status);
    if (NULL == arg)
    {
        return -1;
    }
    PyObject *result = PyObject_CallOneArg(self->head.refs[POLL_FAILED], arg);
    Py_DECREF(arg);
    Py_XDECREF(result);
    return NULL == result ? -1 : 0;
}

/* The frame length at the position (acquire), through the peek hint: > 0 when something is there. */
static inline int32_t poll_peek(const PollObject *self, const ls_image_t *image)
{
    return ls_get_acquire_i32((const int32_t *)image->log.terms[0] + *self->peek);
}

/* A poll that found nothing at the position: first (once after views were handed out by the scan
 * path, or always for a private reader, which may be lapped into a cleaned partition) confirm what
 * was handed out was intact, as the Python poll does (LogReader._nothing_yet), so a loss found
 * later starts at the position. 0, or what poll_failed returns. */
static Py_ssize_t poll_nothing(PollObject *self, ls_image_t *image)
{
    if (self->unchecked || (NULL == image->owner_counters && image->lap_checked))
    {
        self->unchecked = 0;
        const int status = ls_image_check(image);
        if (status < 0)
        {
            return poll_failed(self, status);
        }
    }
    return 0;
}

/* The fields of the Header for a whole message in the frame at `offset` of term `term_id`. */
static inline void poll_fill_header(ls_frame_header_t *h, const uint8_t *frame, int64_t next, int32_t term_id,
                                    int32_t offset, int32_t frame_length)
{
    h->position = next;
    h->term_id = term_id;
    h->term_offset = offset;
    h->session_id = ls_get_plain_i32(frame + LS_FRAME_SESSION_ID_OFFSET);
    h->stream_id = ls_get_plain_i32(frame + LS_FRAME_STREAM_ID_OFFSET);
    h->frame_length = frame_length;
    h->flags = frame[LS_FRAME_FLAGS_OFFSET];
    h->type = LS_FRAME_TYPE_DATA;
    h->reserved_value = ls_get_plain_i64(frame + LS_FRAME_RESERVED_VALUE_OFFSET);
}

/* Stores the position past what was handed out (once per poll, after the handlers, as Aeron's
 * image poll does: the bytes stay the writers' to hold back until then) and the peek hint. */
static int poll_commit(PollObject *self, ls_image_t *image, int64_t position)
{
    const int status = ls_image_set_position(image, position);
    if (0 == status)
    {
        const ls_logbuffer_t *log = &image->log; /* ls_image_length_index, inline */
        *self->peek = (int32_t)(((int64_t)ls_logbuffer_index_by_position(position, log->position_bits_to_shift) *
                                     log->term_length +
                                 ls_logbuffer_compute_term_offset_from_position(position, log->term_length)) /
                                (int32_t)sizeof(int32_t));
    }
    return status;
}

/* The common case, frame by frame with no scan arrays (Aeron's term reader): whole unfragmented
 * DATA frames from the position, padding skipped, across term ends, each checked as ls_image_read
 * checks it before its bytes are trusted, handed to handler as they are met; the position is
 * stored once after them. What it does not take (a fragment, a frame to reject or of another term:
 * lapped) stops it with *other = 1: the scan path (poll_scanned) reads it and says what it is; a
 * controlled handler's ABORT or BREAK stops it with *other = 2 (this poll is done). The
 * views handed out since the last check are confirmed intact first (ls_image_check: once after
 * views went out, so in a busy spin the empty polls before a message have done it; always for a
 * private reader), and these by the commit (ls_image_set_position checks the counter is still
 * ours, or for a private reader that the writers have not lapped the first of them): a failure
 * there is told by the next poll, from at or before the first of them. Messages handled, or -1
 * with an exception. */
static Py_ssize_t poll_frames(PollObject *self, ls_image_t *image, PyObject *handler, long limit, int controlled,
                              int *other)
{
    const ls_logbuffer_t *log = &image->log;
    const int32_t term_length = log->term_length;
    const int32_t shift = log->position_bits_to_shift;
    int64_t start = ls_image_position(image); /* (a COMMIT moves it: what is stored already) */
    if (self->unchecked || (NULL == image->owner_counters && image->lap_checked))
    {
        self->unchecked = 0;
        const int status = ls_image_check(image);
        if (status < 0)
        {
            return poll_failed(self, status);
        }
    }
    ls_frame_header_t *header = &self->scan->headers[0];
    self->header->i = 0;
    int64_t position = start;
    Py_ssize_t count = 0;
    while (count < limit)
    {
        const int32_t offset = ls_logbuffer_compute_term_offset_from_position(position, term_length);
        const uint8_t *frame = log->terms[ls_logbuffer_index_by_position(position, shift)] + offset;
        const int32_t frame_length = ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET);
        if (frame_length <= 0)
        {
            break;
        }
        const int32_t term_id = ls_logbuffer_compute_term_id_from_position(position, shift, log->initial_term_id);
        const int16_t type = ls_frame_type(frame);
        if (!ls_frame_fits_term(frame_length, offset, term_length) || !ls_frame_is_at(frame, offset, term_id) ||
            (LS_FRAME_TYPE_PAD != type &&
             (LS_FRAME_TYPE_DATA != type || frame_length > log->mtu_length ||
              LS_FRAME_FLAGS_UNFRAGMENTED != frame[LS_FRAME_FLAGS_OFFSET])))
        {
            *other = 1;
            break;
        }
        const int64_t next = position + LS_ALIGN(frame_length, LS_FRAME_ALIGNMENT);
        if (LS_FRAME_TYPE_PAD != type)
        {
            poll_fill_header(header, frame, next, term_id, offset, frame_length);
            long action = LS_RB_CONTINUE;
            const int handed = ls_fast_hand(handler, &self->head.refs[POLL_VIEW], frame + LS_DATA_HEADER_LENGTH,
                                            frame_length - LS_DATA_HEADER_LENGTH, (PyObject *)self->header,
                                            controlled ? &action : NULL);
            if (handed < 0)
            {
                /* The failing message counts as consumed, the rest do not. */
                poll_commit(self, image, -2 == handed ? position : next);
                return -1;
            }
            self->unchecked = 1; /* the next poll that finds nothing checks once (as the scan path does) */
            if (LS_RB_ABORT == action)
            {
                *other = 2; /* unread: the position stays at its frame */
                break;
            }
            count++;
            if (LS_RB_BREAK == action)
            {
                position = next;
                *other = 2;
                break;
            }
            if (LS_RB_COMMIT == action)
            {
                if (poll_commit(self, image, next) < 0)
                {
                    return count; /* not ours any more: the next poll says why */
                }
                start = next;
            }
        }
        position = next;
    }
    if (position != start && poll_commit(self, image, position) < 0 && 0 == count)
    {
        const int lost = ls_image_check(image); /* (the status again, and its message) */
        return lost < 0 ? poll_failed(self, lost) : 0;
    }
    return count;
}

/* The position to `position` (the start or end of a frame the scan just passed, its bytes still
 * intact), and the peek hint with it; what ls_image_set_position returns. */
static int poll_move_to(PollObject *self, ls_image_t *image, int64_t position)
{
    const int status = ls_image_set_position(image, position);
    *self->peek = ls_image_length_index(image, ls_image_position(image));
    return status;
}

/* The scan path: ls_image_scan_commit (deferred: ls_image_scan_deferred, the position stored after
 * the handlers), the loop across padding, fragments and term ends, handler calls over the scan's
 * arrays. Messages handled, or -1 with an exception. */
static Py_ssize_t poll_scanned(PollObject *self, ls_image_t *image, PyObject *handler, long limit, int controlled)
{
    ls_image_scan_t *scan = self->scan;
    Py_ssize_t total = 0;
    while (total < limit && NULL != self->head.target)
    {
        const int64_t before = ls_image_position(image);
        const int32_t want = (int32_t)(limit - total > INT32_MAX ? INT32_MAX : limit - total);
        const int32_t n = self->deferred ? ls_image_scan_deferred(image, scan, want) : ls_image_scan_commit(image, scan, want);
        *self->peek = scan->end_length_index;
        if (n < 0)
        {
            if (total > 0)
            {
                return total; /* the next poll meets the bad frame (or the loss) first and says so */
            }
            return NULL == self->head.refs[POLL_FAILED] ? poll_fallback(self, handler, limit) : poll_failed(self, n);
        }
        if (n > 0)
        {
            self->unchecked = 1;
        }
        for (int32_t i = 0; i < n; i++)
        {
            const int32_t offset = scan->data_offsets[i];
            const uint8_t *data = offset >= 0 ? image->log.terms[scan->partitions[i]] + offset : image->assembler.buffer;
            self->header->i = i;
            long action = LS_RB_CONTINUE;
            const int handed = ls_fast_hand(handler, &self->head.refs[POLL_VIEW], data, scan->lengths[i],
                                            (PyObject *)self->header, controlled ? &action : NULL);
            if (-2 == handed)
            {
                return -1;
            }
            if (handed < 0)
            {
                /* The failing message counts as consumed, the rest do not. */
                poll_move_to(self, image, scan->headers[i].position);
                return -1;
            }
            if (LS_RB_ABORT == action)
            {
                /* Unread: back to its frame; a reassembled one (the last of its scan) back to its END
                 * fragment, the assembler keeping the rest (Aeron's ControlledFragmentAssembler: a
                 * driver zeroes the log behind the position, the earlier fragments may be gone). */
                const ls_frame_header_t *h = &scan->headers[i];
                if (offset < 0 && ls_fragment_assembler_reopen(&image->assembler, h) < 0)
                {
                    PyErr_SetString(PyExc_RuntimeError, ls_errmsg()); /* (not reached: the scan just completed it) */
                    return -1;
                }
                poll_move_to(self, image, h->position - LS_ALIGN(h->frame_length, LS_FRAME_ALIGNMENT));
                return total + i;
            }
            if (LS_RB_BREAK == action || (LS_RB_COMMIT == action && self->deferred))
            {
                /* Stored past it (a deferred scan's bytes are the driver's to reclaim from then on). */
                const int moved = poll_move_to(self, image, scan->headers[i].position);
                if (LS_RB_BREAK == action || moved < 0)
                {
                    return total + i + 1;
                }
            }
        }
        if (self->deferred && n > 0 && ls_image_set_position(image, scan->end_position) < 0)
        {
            return total + n; /* (the next poll's check says why) */
        }
        total += n;
        if (scan->end_position == before)
        {
            break; /* nothing more written */
        }
    }
    return total;
}

/* Hands up to `limit` messages to handler; returns how many, or -1 with an exception. Frame by
 * frame (poll_frames) while the frames are whole messages, else the scan path. A close meanwhile
 * (from a handler, or another thread while one runs) lets this call finish, as the Python poll
 * does; the owner's teardown waits for it (ls_fast_enter). */
static Py_ssize_t poll_messages(PollObject *self, ls_image_t *image, PyObject *handler, long limit, int controlled)
{
    if (poll_peek(self, image) <= 0)
    {
        return poll_nothing(self, image);
    }
    int other = 0;
    const Py_ssize_t n = poll_frames(self, image, handler, limit, controlled, &other);
    if (n < 0 || 1 != other || n >= limit)
    {
        return n;
    }
    const Py_ssize_t more = poll_scanned(self, image, handler, limit - n, controlled);
    if (more < 0)
    {
        return -1;
    }
    return 0 == n + more && NULL != self->head.target ? poll_nothing(self, image) : n + more;
}

static Py_ssize_t poll_image(PollObject *self, PyObject *handler, long limit, int controlled)
{
    ls_image_t *image = self->head.target;
    if (NULL == image)
    {
        return poll_fallback(self, handler, limit);
    }
    if (!self->unchecked && (NULL != image->owner_counters || !image->lap_checked) && poll_peek(self, image) <= 0)
    {
        return 0; /* the busy spin's case: nothing there, nothing to confirm (no Python code runs) */
    }
    if (*self->polling)
    {
        /* The position moves only after the handlers: a poll within one would hand out the same
         * messages again (the flag receive() checks too). */
        PyErr_SetString(PyExc_RuntimeError, "poll: already polling this image (from its handler, or from another "
                                            "thread during one): its messages would be handed out twice");
        return -1;
    }
    ls_fast_enter(&self->head);
    *self->polling = 1;
    const Py_ssize_t n = poll_messages(self, image, handler, limit, controlled);
    *self->polling = 0;
    return ls_fast_leave(&self->head, n < 0) < 0 ? -1 : n;
}

static int parse_poll_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, long *limit)
{
    if (NULL != kwnames || nargs < 1 || nargs > 2)
    {
        return 0;
    }
    *limit = POLL_DEFAULT_LIMIT;
    if (2 == nargs)
    {
        *limit = PyLong_AsLong(args[1]);
        if (-1 == *limit && PyErr_Occurred())
        {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

static PyObject *poll_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PollObject *self = (PollObject *)callable;
    long limit;
    if (NULL == self->head.target || !parse_poll_args(args, PyVectorcall_NARGS(nargsf), kwnames, &limit))
    {
        return PyObject_Vectorcall(self->head.refs[POLL_FALLBACK], args, nargsf, kwnames);
    }
    const Py_ssize_t n = poll_image(self, args[0], limit, 0);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* The offset of a T_INT member `name` of `obj`'s type (the Receive's peek hint). */
static int *int_member(PyObject *obj, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), name);
    if (NULL == descr)
    {
        return NULL;
    }
    int *address = NULL;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && T_INT == ((PyMemberDescrObject *)descr)->d_member->type)
    {
        address = (int *)((char *)obj + ((PyMemberDescrObject *)descr)->d_member->offset);
    }
    else
    {
        PyErr_Format(PyExc_TypeError, "%.100s.%s: expected an int member", Py_TYPE(obj)->tp_name, name);
    }
    Py_DECREF(descr);
    return address;
}

static PyObject *poll_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *image_buffer, *scan_buffer, *receive, *fallback, *failed = NULL, *finish = NULL;
    int deferred = 0;
    static char *names[] = { "image", "scan", "receive", "fallback", "failed", "finish", "deferred", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|OOp:Poll", names, &image_buffer, &scan_buffer, &receive,
                                     &fallback, &failed, &finish, &deferred))
    {
        return NULL;
    }
    if (Py_None == failed)
    {
        failed = NULL;
    }
    if (NULL != failed && !PyCallable_Check(failed))
    {
        return PyErr_Format(PyExc_TypeError, "failed: expected a callable (status) -> None that raises or tells");
    }
    ls_image_t *image = ls_fast_buffer_address(image_buffer, (Py_ssize_t)sizeof(ls_image_t), "ls_image_t");
    ls_image_scan_t *scan = NULL == image ? NULL :
        ls_fast_buffer_address(scan_buffer, (Py_ssize_t)sizeof(ls_image_scan_t), "ls_image_scan_t");
    int *peek = NULL == scan ? NULL : int_member(receive, "peek");
    int *polling = NULL == peek ? NULL : int_member(receive, "polling");
    if (NULL == polling)
    {
        return NULL;
    }
    PyObject *header = ls_fast_header_new(scan_buffer);
    if (NULL == header)
    {
        return NULL;
    }
    PyObject *refs[] = { image_buffer, scan_buffer, receive, fallback, header, NULL, failed };
    PollObject *self = (PollObject *)ls_fast_alloc(type, poll_vectorcall, image, refs, 7);
    Py_DECREF(header);
    if (NULL != self && ls_fast_set_finish(&self->head, finish) < 0)
    {
        Py_CLEAR(self);
    }
    if (NULL != self)
    {
        self->scan = scan;
        self->peek = peek;
        self->polling = polling;
        self->deferred = deferred;
        self->header = (HeaderObject *)header; /* owned through refs */
    }
    return (PyObject *)self;
}

static PyGetSetDef poll_getset[] = {
    LS_FAST_HEADER_GETSET(POLL_HEADER),
    LS_FAST_BUSY_GETSET,
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMethodDef poll_methods[] = {
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyTypeObject PollType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Poll",
    .tp_doc = "poll(handler, limit=10) -> messages handed to handler(data, header).",
    LS_FAST_TYPE_COMMON(PollObject),
    .tp_new = poll_new,
    .tp_methods = poll_methods,
    .tp_getset = poll_getset,
};

/* -- PollAny: subscription.poll(handler, fragment_limit=10), images in turn ------------- */

enum { ANY_IMAGES, ANY_HOUSEKEEPING, ANY_FALLBACK, ANY_EVENTS };

typedef struct
{
    LsFastHead head;  /* target: itself while attached; refs: see the enum above */
    Py_ssize_t next;
    uint64_t polls;
    int controlled;   /* controlled_poll: the handlers return actions */
} PollAnyObject;

static PyObject *poll_any_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PollAnyObject *self = (PollAnyObject *)callable;
    long limit;
    if (NULL == self->head.target || !parse_poll_args(args, PyVectorcall_NARGS(nargsf), kwnames, &limit))
    {
        return PyObject_Vectorcall(self->head.refs[ANY_FALLBACK], args, nargsf, kwnames);
    }
    PyObject *events = self->head.refs[ANY_EVENTS];
    if (NULL != events)
    {
        /* Announced image changes join first (a media driver's subscription): housekeeping now. */
        const Py_ssize_t pending = PyObject_Length(events);
        PyObject *result = pending > 0 ? PyObject_CallNoArgs(self->head.refs[ANY_HOUSEKEEPING]) : NULL;
        if (pending < 0 || (pending > 0 && NULL == result))
        {
            return NULL;
        }
        Py_XDECREF(result);
        if (NULL == self->head.target)
        {
            return PyObject_Vectorcall(self->head.refs[ANY_FALLBACK], args, nargsf, kwnames); /* closed by it */
        }
    }
    PyObject *images = Py_NewRef(self->head.refs[ANY_IMAGES]); /* housekeeping may replace the tuple */
    const Py_ssize_t count = PyTuple_GET_SIZE(images);
    Py_ssize_t total = 0;
    const Py_ssize_t start = count > 1 ? (self->next = self->next + 1 < count ? self->next + 1 : 0) : 0;
    for (Py_ssize_t k = 0; k < count && total >= 0 && NULL != self->head.target; k++)
    {
        const Py_ssize_t at = start + k; /* (start + k) % count, without a division per poll */
        PollObject *image = (PollObject *)PyTuple_GET_ITEM(images, at < count ? at : at - count);
        if (NULL == image->head.target)
        {
            continue; /* closed meanwhile (lost, or by a handler) */
        }
        const Py_ssize_t n = poll_image(image, args[0], limit - total, self->controlled);
        total = n < 0 ? -1 : total + n;
        if (total >= limit)
        {
            break;
        }
    }
    Py_DECREF(images);
    if (total < 0)
    {
        return NULL;
    }
    if (0 == (++self->polls & (total ? 1023 : 63)) && Py_None != self->head.refs[ANY_HOUSEKEEPING])
    {
        PyObject *result = PyObject_CallNoArgs(self->head.refs[ANY_HOUSEKEEPING]);
        if (NULL == result)
        {
            return NULL;
        }
        Py_DECREF(result);
    }
    return PyLong_FromSsize_t(total);
}

static PyObject *poll_any_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *housekeeping, *fallback, *events = NULL;
    int controlled = 0;
    static char *names[] = { "housekeeping", "fallback", "events", "controlled", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Op:PollAny", names, &housekeeping, &fallback, &events,
                                     &controlled))
    {
        return NULL;
    }
    if (Py_None == events)
    {
        events = NULL;
    }
    if ((Py_None != housekeeping || NULL != events) && !PyCallable_Check(housekeeping))
    {
        return PyErr_Format(PyExc_TypeError, "housekeeping: expected a callable (or None, without events)");
    }
    PyObject *images = PyTuple_New(0);
    if (NULL == images)
    {
        return NULL;
    }
    PyObject *refs[] = { images, housekeeping, fallback, events };
    PyObject *self = ls_fast_alloc(type, poll_any_vectorcall, NULL, refs, 4);
    Py_DECREF(images);
    if (NULL != self)
    {
        ((LsFastHead *)self)->target = self; /* attached: no C struct of its own */
        ((PollAnyObject *)self)->controlled = controlled;
    }
    return self;
}

static PyObject *poll_any_set_images(PollAnyObject *self, PyObject *images)
{
    return ls_fast_set_images(&self->head, ANY_IMAGES, &self->next, images, &PollType);
}

static PyMethodDef poll_any_methods[] = {
    { "set_images", (PyCFunction)poll_any_set_images, METH_O, "The images to poll in turn, a tuple of Poll." },
    LS_FAST_DETACH_METHOD,
    { NULL, NULL, 0, NULL },
};

static PyTypeObject PollAnyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.PollAny",
    .tp_doc = "poll(handler, fragment_limit=10) -> messages of every image (in turn) handed to handler. "
              "PollAny(housekeeping, fallback, events=None, controlled=False): housekeeping() (None: none) every "
              "64 empty / 1024 busy polls, and first whenever the sized `events` is not empty; controlled: the "
              "handlers return a ControlledAction (controlled_poll).",
    LS_FAST_TYPE_COMMON(PollAnyObject),
    .tp_new = poll_any_new,
    .tp_methods = poll_any_methods,
};

int ls_fast_register_poll(PyObject *module)
{
    if (ls_fast_add_type(module, &HeaderType, "Header") < 0 || ls_fast_add_type(module, &PollType, "Poll") < 0 ||
        ls_fast_add_type(module, &PollAnyType, "PollAny") < 0)
    {
        return -1;
    }
    return 0;
}
