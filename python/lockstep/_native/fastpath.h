/* The shared lifecycle of the vectorcall types (offer.c, receive.c, send.c, poll.c, ring_fast.c,
 * claim.c, scan_deliver.c): each object starts with LsFastHead (its vectorcall, the C struct it
 * borrows, and up to LS_FAST_REFS Python references: owner, fallback, ...), so
 * new/traverse/clear/dealloc/detach are written once here. The borrowed struct comes from a cffi
 * buffer of exactly its size (never a raw address); the owner keeps it alive and detaches the
 * object before freeing or unmapping it. */
#ifndef LS_FASTPATH_H
#define LS_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "logbuffer/frame_header.h"

#define LS_FAST_REFS 9
/* The owner's deferred close finish (refs[LS_FAST_FINISH], or NULL): see ls_fast_leave. */
#define LS_FAST_FINISH (LS_FAST_REFS - 1)

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    void *target;                  /* the borrowed C struct; NULL once detached */
    int depth;                     /* calls in flight that run Python code (handlers): see ls_fast_enter */
    PyObject *refs[LS_FAST_REFS];  /* owned references, cleared together */
} LsFastHead;

/* Allocates an object of `type` (which starts with LsFastHead) with its vectorcall and refs
 * (NULL entries allowed; new references are taken). */
PyObject *ls_fast_alloc(PyTypeObject *type, vectorcallfunc vectorcall, void *target, PyObject *const *refs, int count);

/* The address behind `buffer` (e.g. cffi's ffi.buffer(ptr)) when it is exactly `size` bytes
 * of `what`; else NULL with a TypeError/ValueError naming `what`. */
void *ls_fast_buffer_address(PyObject *buffer, Py_ssize_t size, const char *what);

/* A call that hands out views of the target's memory and runs Python code (a handler, during
 * which another thread may close the owner, or the handler itself does) is in flight from
 * ls_fast_enter to ls_fast_leave: the owner defers its teardown (unmap, free) while `busy` (the
 * depth) is set, and the outermost call that returns detached runs the owner's finish
 * (refs[LS_FAST_FINISH], its deferred teardown). ls_fast_leave keeps a pending exception
 * (`failed`: the call is failing) and returns -1 when the call fails in the end (it failed, or
 * finish raised), else 0. */
static inline void ls_fast_enter(LsFastHead *head)
{
    head->depth++;
}
int ls_fast_leave(LsFastHead *head, int failed);
/* Stores `finish` (None: none) as refs[LS_FAST_FINISH]; -1 with TypeError when not callable. */
int ls_fast_set_finish(LsFastHead *head, PyObject *finish);
PyObject *ls_fast_busy(PyObject *self, void *closure);

int ls_fast_traverse(PyObject *self, visitproc visit, void *arg);
int ls_fast_clear(PyObject *self);
void ls_fast_dealloc(PyObject *self);
PyObject *ls_fast_detach(PyObject *self, PyObject *ignored);

/* A zero-copy memoryview of data[0:length] to hand to a handler or a claim: the one in *slot,
 * re-pointed, when nothing else holds it (no allocation per message), else a new one that
 * takes its place in *slot. A new reference, or NULL. */
PyObject *ls_fast_view(PyObject **slot, const void *data, Py_ssize_t length, int writable);
/* Ends the view's validity (after the handler call, or at commit): it is marked released, so a
 * caller that kept it gets ValueError instead of a window onto reused memory (a view something
 * was exported from stays as it is). Drops the reference `ls_fast_view` returned. */
void ls_fast_view_done(PyObject *view);
void ls_fast_view_release(PyObject *view); /* the same, keeping the reference */

/* Hands data[0:length] to handler(view, header) (vectorcall, a view from ls_fast_view over *slot,
 * released after the call). 0 when the handler returned, -1 when it raised (the message was
 * handed out), -2 when no view could be made (nothing handed out); an exception is set then.
 * `action` (NULL: the result is dropped) gets what the handler returned as a controlled action
 * (ls_fast_action). */
int ls_fast_hand(PyObject *handler, PyObject **slot, const void *data, Py_ssize_t length, PyObject *header,
                 long *action);

/* A controlled handler's result as an action (LS_RB_ABORT .. LS_RB_CONTINUE, Aeron's controlled-poll
 * values, which rings and images share): an int as it is, anything else (None) LS_RB_CONTINUE. */
long ls_fast_action(PyObject *result);

/* The Header (poll.c): the frame header of the message being handled, headers[i] of a scan
 * (an image's or a term's) that it keeps alive; the fast types that call handlers set i. */
typedef struct
{
    PyObject_HEAD
    const ls_frame_header_t *headers; /* the scan's headers array */
    int i;                            /* which one is current */
    PyObject *owner;                  /* keeps *headers alive */
} LsHeaderObject;

/* A new Header over `scan` (ffi.buffer of an ls_image_scan_t or ls_term_scan_t), or NULL. */
PyObject *ls_fast_header_new(PyObject *scan);

/* Whether `obj` is a Header; if so, *position is its current message's (no Python int made). */
int ls_fast_header_position(PyObject *obj, long long *position);

/* The flags and slots every fast type shares. */
#define LS_FAST_TYPE_COMMON(Struct)                                                          \
    .tp_basicsize = sizeof(Struct),                                                         \
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,       \
    .tp_vectorcall_offset = offsetof(LsFastHead, vectorcall),                               \
    .tp_call = PyVectorcall_Call,                                                           \
    .tp_traverse = ls_fast_traverse,                                                        \
    .tp_clear = ls_fast_clear,                                                              \
    .tp_dealloc = ls_fast_dealloc

/* The getter of a fast type's `header` (refs[slot], the one Header its handler calls get). */
PyObject *ls_fast_ref_get(PyObject *self, void *slot);
#define LS_FAST_HEADER_GETSET(slot) \
    { "header", ls_fast_ref_get, NULL, "the one Header handed to every handler call", (void *)(intptr_t)(slot) }

#define LS_FAST_BUSY_GETSET \
    { "busy", (getter)ls_fast_busy, NULL, "a call is in flight (its handler runs): the owner's teardown waits", NULL }

#define LS_FAST_DETACH_METHOD \
    { "detach", (PyCFunction)ls_fast_detach, METH_NOARGS, "Forget the C struct: later calls go to the fallback." }

/* An "any" type's set_images: `images` must be a tuple of `type`; it goes into refs[slot] and
 * the round-robin restarts (*next = 0). None, or NULL with TypeError. */
PyObject *ls_fast_set_images(LsFastHead *head, int slot, Py_ssize_t *next, PyObject *images, PyTypeObject *type);

/* Registration of each file's types into the module (called from _fastpath.c's init). */
int ls_fast_register(PyObject *module);
int ls_fast_register_offer(PyObject *module);
int ls_fast_register_receive(PyObject *module);
int ls_fast_register_send(PyObject *module);
int ls_fast_register_poll(PyObject *module);
int ls_fast_register_ring(PyObject *module);
int ls_fast_register_claim(PyObject *module);
int ls_fast_register_scan_deliver(PyObject *module); /* scan_deliver.c */
int ls_fast_register_codec(PyObject *module); /* codec_fast.c */
int ls_fast_register_apply(PyObject *module); /* apply_fast.c */
int ls_fast_add_type(PyObject *module, PyTypeObject *type, const char *name);

#endif
