/* What the fast types (offer.c, receive.c, send.c, poll.c, ring_fast.c, claim.c, scan_deliver.c)
 * share (see fastpath.h), and FastMethod: the class-level descriptor that makes a fast object the documented method. */
#include "fastpath.h"

#include <string.h>

#include <structmember.h>

#include "concurrent/ring_buffer.h" /* LS_RB_CONTINUE */

PyObject *ls_fast_alloc(PyTypeObject *type, vectorcallfunc vectorcall, void *target, PyObject *const *refs, int count)
{
    LsFastHead *self = (LsFastHead *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->vectorcall = vectorcall;
    self->target = target;
    for (int i = 0; i < count && i < LS_FAST_REFS; i++)
    {
        self->refs[i] = Py_XNewRef(refs[i]);
    }
    return (PyObject *)self;
}

void *ls_fast_buffer_address(PyObject *buffer, Py_ssize_t size, const char *what)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0)
    {
        PyErr_Format(PyExc_TypeError, "expected a buffer of one %s (ffi.buffer(ptr)), found %.100s",
                     what, Py_TYPE(buffer)->tp_name);
        return NULL;
    }
    void *address = view.buf;
    const Py_ssize_t length = view.len;
    PyBuffer_Release(&view);
    if (length != size || NULL == address)
    {
        PyErr_Format(PyExc_ValueError, "expected a buffer of one %s (%zd bytes), found %zd bytes", what, size, length);
        return NULL;
    }
    return address;
}

int ls_fast_leave(LsFastHead *head, int failed)
{
    if (0 != --head->depth || NULL != head->target || NULL == head->refs[LS_FAST_FINISH])
    {
        return failed ? -1 : 0;
    }
    /* Detached while in flight (closed under a handler): the owner's teardown was deferred to now. */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = PyObject_CallNoArgs(head->refs[LS_FAST_FINISH]);
    if (NULL == result)
    {
        if (failed)
        {
            PyErr_WriteUnraisable(head->refs[LS_FAST_FINISH]); /* the call's own error goes on */
            PyErr_Restore(type, value, traceback);
        }
        else
        {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        }
        return -1;
    }
    Py_DECREF(result);
    PyErr_Restore(type, value, traceback);
    return failed ? -1 : 0;
}

int ls_fast_set_finish(LsFastHead *head, PyObject *finish)
{
    if (NULL == finish || Py_None == finish)
    {
        return 0;
    }
    if (!PyCallable_Check(finish))
    {
        PyErr_SetString(PyExc_TypeError, "finish: expected a callable (the owner's deferred close finish)");
        return -1;
    }
    Py_XSETREF(head->refs[LS_FAST_FINISH], Py_NewRef(finish));
    return 0;
}

PyObject *ls_fast_busy(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((LsFastHead *)self)->depth > 0);
}

int ls_fast_traverse(PyObject *self, visitproc visit, void *arg)
{
    LsFastHead *head = (LsFastHead *)self;
    for (int i = 0; i < LS_FAST_REFS; i++)
    {
        Py_VISIT(head->refs[i]);
    }
    return 0;
}

int ls_fast_clear(PyObject *self)
{
    LsFastHead *head = (LsFastHead *)self;
    head->target = NULL;
    for (int i = 0; i < LS_FAST_REFS; i++)
    {
        Py_CLEAR(head->refs[i]);
    }
    return 0;
}

void ls_fast_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    ls_fast_clear(self);
    Py_TYPE(self)->tp_free(self);
}

PyObject *ls_fast_detach(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ((LsFastHead *)self)->target = NULL;
    Py_RETURN_NONE;
}

PyObject *ls_fast_view(PyObject **slot, const void *data, Py_ssize_t length, int writable)
{
    PyMemoryViewObject *view = (PyMemoryViewObject *)*slot;
    if (NULL != view && Py_IS_TYPE(view, &PyMemoryView_Type) && 1 == Py_REFCNT(view) && 0 == view->exports &&
        view->view.readonly == !writable && !(view->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED))
    {
        /* Only *slot holds it (a 1-d view of bytes over memory, from below): re-point it. */
        view->view.buf = (void *)data;
        view->view.len = length;
        view->view.shape[0] = length;
        view->mbuf->master.buf = (void *)data;
        view->mbuf->master.len = length;
        view->hash = -1;
        view->flags &= ~_Py_MEMORYVIEW_RELEASED;
        return Py_NewRef((PyObject *)view);
    }
    PyObject *fresh = PyMemoryView_FromMemory((char *)data, length, writable ? PyBUF_WRITE : PyBUF_READ);
    if (NULL != fresh)
    {
        Py_XSETREF(*slot, Py_NewRef(fresh));
    }
    return fresh;
}

void ls_fast_view_release(PyObject *view)
{
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    if (Py_IS_TYPE(view, &PyMemoryView_Type) && 0 == mv->exports)
    {
        mv->flags |= _Py_MEMORYVIEW_RELEASED; /* as memoryview.release() does (the buffer is not owned) */
    }
}

void ls_fast_view_done(PyObject *view)
{
    ls_fast_view_release(view);
    Py_DECREF(view);
}

PyObject *ls_fast_ref_get(PyObject *self, void *slot)
{
    return Py_NewRef(((LsFastHead *)self)->refs[(intptr_t)slot]);
}

long ls_fast_action(PyObject *result)
{
    if (!PyLong_Check(result))
    {
        return LS_RB_CONTINUE;
    }
    const long action = PyLong_AsLong(result);
    if (-1 == action && PyErr_Occurred())
    {
        PyErr_Clear(); /* (an int past a long: not an action) */
        return LS_RB_CONTINUE;
    }
    return action;
}

int ls_fast_hand(PyObject *handler, PyObject **slot, const void *data, Py_ssize_t length, PyObject *header,
                 long *action)
{
    PyObject *view = ls_fast_view(slot, data, length, 0);
    if (NULL == view)
    {
        return -2;
    }
    /* (args[-1] free for a bound-method handler to put its self in: no new argument array) */
    PyObject *args[3] = { NULL, view, header };
    PyObject *result = PyObject_Vectorcall(handler, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    ls_fast_view_done(view);
    if (NULL == result)
    {
        return -1;
    }
    if (NULL != action)
    {
        *action = ls_fast_action(result);
    }
    Py_DECREF(result);
    return 0;
}

PyObject *ls_fast_set_images(LsFastHead *head, int slot, Py_ssize_t *next, PyObject *images, PyTypeObject *type)
{
    int ok = PyTuple_Check(images);
    for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(images); i++)
    {
        ok = PyObject_TypeCheck(PyTuple_GET_ITEM(images, i), type);
    }
    if (!ok)
    {
        const char *name = strrchr(type->tp_name, '.');
        return PyErr_Format(PyExc_TypeError, "images: expected a tuple of %s", NULL == name ? type->tp_name : name + 1);
    }
    Py_SETREF(head->refs[slot], Py_NewRef(images));
    *next = 0;
    Py_RETURN_NONE;
}

int ls_fast_add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0 || PyModule_AddObjectRef(module, name, (PyObject *)type) < 0)
    {
        return -1;
    }
    return 0;
}

/* -- FastMethod(attribute, function): the documented method, its fast object per instance -- */

typedef struct
{
    PyObject_HEAD
    PyObject *attribute; /* name of the instance attribute holding the fast object */
    PyObject *function;  /* the Python implementation: what the class shows, and the fallback */
    PyTypeObject *owner; /* the class, when `attribute` is one of its __slots__ ... */
    Py_ssize_t offset;   /* ... at this offset in its instances (read directly: no lookup) */
} FastMethodObject;

static PyObject *fast_method_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    FastMethodObject *method = (FastMethodObject *)self;
    if (NULL == obj || Py_None == obj)
    {
        return Py_NewRef(method->function); /* Class.method: the function, its docstring and signature */
    }
    if (NULL != method->owner && PyObject_TypeCheck(obj, method->owner))
    {
        PyObject *slot = *(PyObject **)((char *)obj + method->offset);
        /* Unset (a subclass that makes no fast object, e.g. over a media driver's logs): the
         * Python implementation, without the lookup that would raise and clear AttributeError. */
        return NULL != slot ? Py_NewRef(slot) : PyMethod_New(method->function, obj);
    }
    PyObject *fast = PyObject_GetAttr(obj, method->attribute);
    if (NULL != fast)
    {
        return fast;
    }
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
    {
        return NULL;
    }
    PyErr_Clear(); /* not set up (yet): the Python implementation */
    return PyMethod_New(method->function, obj);
}

static PyObject *fast_method_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *attribute, *function;
    static char *names[] = { "attribute", "function", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UO:FastMethod", names, &attribute, &function))
    {
        return NULL;
    }
    FastMethodObject *self = (FastMethodObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        return NULL;
    }
    self->attribute = Py_NewRef(attribute);
    PyUnicode_InternInPlace(&self->attribute);
    self->function = Py_NewRef(function);
    return (PyObject *)self;
}

static int fast_method_traverse(FastMethodObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->attribute);
    Py_VISIT(self->function);
    Py_VISIT(self->owner);
    return 0;
}

static int fast_method_clear(FastMethodObject *self)
{
    Py_CLEAR(self->attribute);
    Py_CLEAR(self->function);
    Py_CLEAR(self->owner);
    self->offset = 0;
    return 0;
}

/* __set_name__(owner, name): when `attribute` is a slot of the class, remember where it is. */
static PyObject *fast_method_set_name(FastMethodObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (2 != nargs || !PyType_Check(args[0]))
    {
        PyErr_SetString(PyExc_TypeError, "__set_name__(owner, name)");
        return NULL;
    }
    PyTypeObject *owner = (PyTypeObject *)args[0];
    PyObject *descr = PyDict_GetItemWithError(owner->tp_dict, self->attribute); /* borrowed */
    if (NULL == descr && PyErr_Occurred())
    {
        return NULL;
    }
    if (NULL != descr && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
        T_OBJECT_EX == ((PyMemberDescrObject *)descr)->d_member->type)
    {
        Py_XSETREF(self->owner, (PyTypeObject *)Py_NewRef(owner));
        self->offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_RETURN_NONE;
}

static PyMethodDef fast_method_methods[] = {
    { "__set_name__", (PyCFunction)(void (*)(void))fast_method_set_name, METH_FASTCALL,
      "Find the instance attribute among the class's __slots__ (then reading it needs no lookup)." },
    { NULL, NULL, 0, NULL },
};

static void fast_method_dealloc(FastMethodObject *self)
{
    PyObject_GC_UnTrack(self);
    fast_method_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *fast_method_doc(FastMethodObject *self, void *Py_UNUSED(closure))
{
    return PyObject_GetAttrString(self->function, "__doc__");
}

static PyObject *fast_method_wrapped(FastMethodObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->function);
}

static PyGetSetDef fast_method_getset[] = {
    { "__doc__", (getter)fast_method_doc, NULL, NULL, NULL },
    { "__wrapped__", (getter)fast_method_wrapped, NULL, "the Python implementation", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject FastMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.FastMethod",
    .tp_doc = "FastMethod(attribute, function): a method whose calls go to the instance's fast object "
              "(its `attribute`), or to `function` where there is none; the class shows `function`.",
    .tp_basicsize = sizeof(FastMethodObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = fast_method_new,
    .tp_traverse = (traverseproc)fast_method_traverse,
    .tp_clear = (inquiry)fast_method_clear,
    .tp_dealloc = (destructor)fast_method_dealloc,
    .tp_descr_get = fast_method_get,
    .tp_getset = fast_method_getset,
    .tp_methods = fast_method_methods,
};

int ls_fast_register(PyObject *module)
{
    if (ls_fast_add_type(module, &FastMethodType, "FastMethod") < 0 || ls_fast_register_offer(module) < 0 ||
        ls_fast_register_receive(module) < 0 || ls_fast_register_send(module) < 0 ||
        ls_fast_register_poll(module) < 0 || ls_fast_register_ring(module) < 0 || ls_fast_register_claim(module) < 0 ||
        ls_fast_register_scan_deliver(module) < 0 ||
        ls_fast_register_codec(module) < 0 || ls_fast_register_apply(module) < 0)
    {
        return -1;
    }
    return 0;
}
