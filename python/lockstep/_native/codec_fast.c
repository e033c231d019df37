/* lockstep.codec's per-message calls in C: a decoded message is a flyweight (MessageBase: its
 * type, buffer, offset and header fields, nothing copied), its scalar fields are FieldReader
 * descriptors that read a fixed-offset little-endian value from the buffer on each access (no
 * struct call, no numpy scalar), Decoder finds the type by the SBE header and builds the
 * flyweight in one call, and Encoder packs keyword fields straight into a buffer (or a new bytes)
 * with no dict of fields and no tuple of values. Whatever these do not handle — a malformed
 * header, an unknown type, a value out of range or of another type, an odd buffer — goes to
 * codec.py's Python implementation (the fallback), so every CodecError is written once there. */
#include "fastpath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* Field kinds: the numbering codec.py's _FAST_KINDS uses. */
enum codec_kind
{
    K_U1, K_U2, K_U4, K_U8, K_I1, K_I2, K_I4, K_I8, K_F4, K_F8, K_BOOL, K_BYTES, K_COUNT
};

static uint64_t load_le(const uint8_t *p, int size)
{
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; i--) /* byte by byte: any host, any alignment (compiles to one load) */
    {
        v = (v << 8) | p[i];
    }
    return v;
}

static void store_le(uint8_t *p, uint64_t v, int size)
{
    for (int i = 0; i < size; i++)
    {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* The bytes of a buffer, read (or written) in place while no Python code runs: bytes, bytearray
 * and a live C-contiguous memoryview directly, anything else through the buffer protocol (a
 * released memoryview raises there, as it did for struct). *view must be released after (it is
 * empty unless the buffer protocol was used); -1 with an exception set on failure. */
static int buffer_span_flags(PyObject *buffer, Py_buffer *view, uint8_t **data, Py_ssize_t *size, int flags)
{
    view->obj = NULL;
    if (PyBytes_CheckExact(buffer) && !(flags & PyBUF_WRITABLE))
    {
        *data = (uint8_t *)PyBytes_AS_STRING(buffer);
        *size = PyBytes_GET_SIZE(buffer);
        return 0;
    }
    if (PyByteArray_CheckExact(buffer))
    {
        *data = (uint8_t *)PyByteArray_AS_STRING(buffer);
        *size = PyByteArray_GET_SIZE(buffer);
        return 0;
    }
    if (Py_IS_TYPE(buffer, &PyMemoryView_Type))
    {
        PyMemoryViewObject *mv = (PyMemoryViewObject *)buffer;
        if (!(mv->flags & _Py_MEMORYVIEW_RELEASED) && !(mv->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED) &&
            (mv->flags & _Py_MEMORYVIEW_C) && !((flags & PyBUF_WRITABLE) && mv->view.readonly))
        {
            *data = (uint8_t *)mv->view.buf;
            *size = mv->view.len;
            return 0;
        }
    }
    if (PyObject_GetBuffer(buffer, view, flags) < 0)
    {
        return -1;
    }
    *data = (uint8_t *)view->buf;
    *size = view->len;
    return 0;
}

static int buffer_span(PyObject *buffer, Py_buffer *view, const uint8_t **data, Py_ssize_t *size)
{
    return buffer_span_flags(buffer, view, (uint8_t **)data, size, PyBUF_SIMPLE);
}

static inline void span_release(Py_buffer *view)
{
    if (NULL != view->obj)
    {
        PyBuffer_Release(view);
    }
}

/* -- MessageBase: the flyweight every generated <Name>Message class derives from ----------- */

typedef struct
{
    PyObject_HEAD
    PyObject *type;   /* the MessageType it was decoded as */
    PyObject *buffer; /* bytes, bytearray or a C-contiguous memoryview */
    PyObject *record; /* the numpy view, made on first use by codec.py (NULL until then) */
    Py_ssize_t offset;
    int version;      /* from the header: the encoder's version */
    int block_length; /* from the header: may exceed the type's (a newer version) */
} MessageObject;

static PyTypeObject MessageBaseType;
static PyTypeObject FieldReaderType;
static PyObject *message_to_dict(PyObject *self, PyObject *ignored);

static PyObject *message_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *mtype, *buffer;
    Py_ssize_t offset;
    int version, block_length;
    static char *names[] = { "type", "buffer", "offset", "version", "block_length", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnii:Message", names, &mtype, &buffer, &offset, &version,
            &block_length))
    {
        return NULL;
    }
    MessageObject *self = (MessageObject *)type->tp_alloc(type, 0);
    if (NULL != self)
    {
        self->type = Py_NewRef(mtype);
        self->buffer = Py_NewRef(buffer);
        self->offset = offset;
        self->version = version;
        self->block_length = block_length;
    }
    return (PyObject *)self;
}

static int message_traverse(MessageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->type);
    Py_VISIT(self->buffer);
    Py_VISIT(self->record);
    return 0;
}

static int message_clear(MessageObject *self)
{
    Py_CLEAR(self->type);
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->record);
    return 0;
}

static void message_dealloc(MessageObject *self)
{
    /* (subclasses' subtype_dealloc and subtype_traverse own the reference to their type) */
    PyObject_GC_UnTrack(self);
    message_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Attribute lookup as usual; a name that is not there reads "<Type> has no field 'name'". */
static PyObject *message_getattro(PyObject *self, PyObject *name)
{
    PyObject *found = PyObject_GenericGetAttr(self, name);
    if (NULL != found || !PyErr_ExceptionMatches(PyExc_AttributeError) || !PyUnicode_Check(name) ||
        0 == PyUnicode_CompareWithASCIIString(name, "_record"))
    {
        return found; /* (_record unset: the plain AttributeError codec.py's `record` expects) */
    }
    if (NULL == ((MessageObject *)self)->type)
    {
        return NULL; /* (cleared by the garbage collector: the plain error) */
    }
    PyErr_Clear();
    PyObject *type_name = PyObject_GetAttrString(((MessageObject *)self)->type, "name");
    if (NULL == type_name)
    {
        return NULL;
    }
    PyErr_Format(PyExc_AttributeError, "%S has no field %R", type_name, name);
    Py_DECREF(type_name);
    return NULL;
}

static PyMethodDef message_methods[] = {
    { "to_dict", (PyCFunction)message_to_dict, METH_NOARGS,
      "The fields as plain Python values (int, float, bool, bytes, nested lists), in order." },
    { NULL, NULL, 0, NULL },
};

static PyMemberDef message_members[] = {
    { "type", T_OBJECT, offsetof(MessageObject, type), READONLY, "the MessageType it was decoded as" },
    { "version", T_INT, offsetof(MessageObject, version), READONLY, "from the header: the encoder's version" },
    { "block_length", T_INT, offsetof(MessageObject, block_length), READONLY,
      "from the header: may exceed the type's (a newer version)" },
    { "_buffer", T_OBJECT, offsetof(MessageObject, buffer), READONLY, "the buffer it reads" },
    { "_offset", T_PYSSIZET, offsetof(MessageObject, offset), READONLY, "where its header starts" },
    { "_record", T_OBJECT_EX, offsetof(MessageObject, record), 0, "the numpy view, once made" },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject MessageBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.MessageBase",
    .tp_doc = "MessageBase(type, buffer, offset, version, block_length): a decoded message's flyweight.",
    .tp_basicsize = sizeof(MessageObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = message_new,
    .tp_traverse = (traverseproc)message_traverse,
    .tp_clear = (inquiry)message_clear,
    .tp_dealloc = (destructor)message_dealloc,
    .tp_getattro = message_getattro,
    .tp_members = message_members,
    .tp_methods = message_methods,
};

/* -- FieldReader: msg.<field> for a scalar field (ints, float64, bool, bytes) --------------- */

typedef struct
{
    PyObject_HEAD
    int kind;
    int size;
    Py_ssize_t at;      /* offset from the message's header */
    PyObject *fallback; /* (msg) -> value: codec.py's reader, for whatever C does not handle */
    PyObject *doc;
} FieldReaderObject;

static PyObject *read_value(int kind, int size, const uint8_t *p)
{
    const uint64_t raw = load_le(p, K_BYTES == kind ? 0 : size);
    switch (kind)
    {
        case K_U1:
        case K_U2:
        case K_U4:
        case K_U8: return PyLong_FromUnsignedLongLong(raw);
        case K_I1: return PyLong_FromLong((int8_t)raw);
        case K_I2: return PyLong_FromLong((int16_t)raw);
        case K_I4: return PyLong_FromLong((int32_t)raw);
        case K_I8: return PyLong_FromLongLong((long long)(int64_t)raw);
        case K_F4:
        {
            const uint32_t bits = (uint32_t)raw;
            float f;
            memcpy(&f, &bits, sizeof f);
            return PyFloat_FromDouble(f); /* as struct's 'f' reads it (to_dict: a Python float) */
        }
        case K_F8:
        {
            double d;
            memcpy(&d, &raw, sizeof d);
            return PyFloat_FromDouble(d);
        }
        case K_BOOL: return PyBool_FromLong(0 != raw);
        default:
        {
            Py_ssize_t n = size;
            while (n > 0 && 0 == p[n - 1])
            {
                n--; /* SBE pads fixed char arrays with NULs */
            }
            return PyBytes_FromStringAndSize((const char *)p, n);
        }
    }
}

static PyObject *field_reader_get(PyObject *descr, PyObject *obj, PyObject *type)
{
    (void)type;
    FieldReaderObject *self = (FieldReaderObject *)descr;
    if (NULL == obj || Py_None == obj)
    {
        return Py_NewRef(descr);
    }
    if (!PyObject_TypeCheck(obj, &MessageBaseType) || NULL == ((MessageObject *)obj)->buffer)
    {
        return PyObject_CallOneArg(self->fallback, obj); /* (not a flyweight, or one the GC cleared) */
    }
    MessageObject *msg = (MessageObject *)obj;
    Py_buffer view;
    const uint8_t *data;
    Py_ssize_t size;
    if (buffer_span(msg->buffer, &view, &data, &size) < 0)
    {
        return NULL;
    }
    const Py_ssize_t at = msg->offset + self->at;
    PyObject *value = (msg->offset >= 0 && at + self->size <= size) ? read_value(self->kind, self->size, data + at)
                                                                     : NULL;
    span_release(&view);
    if (NULL == value && !PyErr_Occurred())
    {
        return PyObject_CallOneArg(self->fallback, obj); /* the buffer shrank: say so as before */
    }
    return value;
}

static int field_reader_set(PyObject *descr, PyObject *obj, PyObject *value)
{
    (void)descr;
    (void)value;
    PyErr_Format(PyExc_AttributeError, "fields of a decoded %.100s are read-only (encode a new message)",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *field_reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int kind, size;
    Py_ssize_t at;
    PyObject *fallback, *doc = Py_None;
    static char *names[] = { "kind", "size", "at", "fallback", "doc", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iinO|O:FieldReader", names, &kind, &size, &at, &fallback, &doc))
    {
        return NULL;
    }
    const int fixed = K_BYTES != kind;
    if (kind < 0 || kind >= K_COUNT || size < 1 || at < 0 || (fixed && size > 8) || (K_F4 == kind && 4 != size))
    {
        PyErr_Format(PyExc_ValueError, "FieldReader: unsupported kind %d of %d bytes", kind, size);
        return NULL;
    }
    FieldReaderObject *self = (FieldReaderObject *)type->tp_alloc(type, 0);
    if (NULL != self)
    {
        self->kind = kind;
        self->size = size;
        self->at = at;
        self->fallback = Py_NewRef(fallback);
        self->doc = Py_NewRef(doc);
    }
    return (PyObject *)self;
}

static int field_reader_traverse(FieldReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->doc);
    return 0;
}

static int field_reader_clear(FieldReaderObject *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->doc);
    return 0;
}

static void field_reader_dealloc(FieldReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    field_reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef field_reader_members[] = {
    { "__doc__", T_OBJECT, offsetof(FieldReaderObject, doc), READONLY, NULL },
    { NULL, 0, 0, 0, NULL },
};

static PyTypeObject FieldReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.FieldReader",
    .tp_basicsize = sizeof(FieldReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = field_reader_new,
    .tp_traverse = (traverseproc)field_reader_traverse,
    .tp_clear = (inquiry)field_reader_clear,
    .tp_dealloc = (destructor)field_reader_dealloc,
    .tp_descr_get = field_reader_get,
    .tp_descr_set = field_reader_set,
    .tp_members = field_reader_members,
};

/* msg.to_dict(): every field read by its class's `_readers` ((name, FieldReader) per field, in
 * order); a class without them (array fields), or a buffer that no longer holds the message,
 * goes to codec.py's generated to_dict (msg.type._to_dict(buffer, offset)). */
static PyObject *message_to_dict(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    MessageObject *msg = (MessageObject *)self;
    if (NULL == msg->type || NULL == msg->buffer)
    {
        PyErr_SetString(PyExc_ValueError, "to_dict(): a message the garbage collector cleared");
        return NULL;
    }
    static PyObject *readers_name;
    if (NULL == readers_name && NULL == (readers_name = PyUnicode_InternFromString("_readers")))
    {
        return NULL;
    }
    PyObject *readers = _PyType_Lookup(Py_TYPE(self), readers_name); /* borrowed */
    PyObject *dict = NULL;
    Py_buffer view;
    const uint8_t *data;
    Py_ssize_t size;
    if (NULL != readers && PyTuple_CheckExact(readers) && NULL != (dict = PyDict_New()) &&
        0 == buffer_span(msg->buffer, &view, &data, &size))
    {
        const Py_ssize_t n = PyTuple_GET_SIZE(readers);
        Py_ssize_t i = 0;
        for (; i < n; i++) /* (no Python code runs in the loop: the span stays valid) */
        {
            PyObject *item = PyTuple_GET_ITEM(readers, i);
            if (!PyTuple_CheckExact(item) || 2 != PyTuple_GET_SIZE(item) ||
                !Py_IS_TYPE(PyTuple_GET_ITEM(item, 1), &FieldReaderType))
            {
                break;
            }
            const FieldReaderObject *reader = (const FieldReaderObject *)PyTuple_GET_ITEM(item, 1);
            const Py_ssize_t at = msg->offset + reader->at;
            if (msg->offset < 0 || at + reader->size > size)
            {
                break;
            }
            PyObject *value = read_value(reader->kind, reader->size, data + at);
            if (NULL == value || PyDict_SetItem(dict, PyTuple_GET_ITEM(item, 0), value) < 0)
            {
                Py_XDECREF(value);
                span_release(&view);
                Py_DECREF(dict);
                return NULL;
            }
            Py_DECREF(value);
        }
        span_release(&view);
        if (i == n)
        {
            return dict;
        }
    }
    if (PyErr_Occurred())
    {
        Py_XDECREF(dict);
        return NULL; /* (a released view: the error reading it, as before) */
    }
    Py_XDECREF(dict);
    PyObject *fallback = PyObject_GetAttrString(msg->type, "_to_dict");
    if (NULL == fallback)
    {
        return NULL;
    }
    PyObject *offset = PyLong_FromSsize_t(msg->offset);
    PyObject *result = NULL == offset ? NULL : PyObject_CallFunctionObjArgs(fallback, msg->buffer, offset, NULL);
    Py_XDECREF(offset);
    Py_DECREF(fallback);
    return result;
}

/* -- Decoder: decode(buffer, offset=0) -> the flyweight of the type its header names -------- */

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *types;    /* dict: (schema_id << 16 | template_id) -> (message class, MessageType, block length) */
    PyObject *fallback; /* codec.py's decode: every error and odd argument */
    /* The last type found, kept while the dict is unchanged (its version tag): most streams carry
     * one or a few types, and the lookup (an int key made, a dict probe) is a third of a decode. */
    long cached_key;      /* -1: none */
    uint64_t cached_version;
    PyTypeObject *cached_class;
    PyObject *cached_type;
    long cached_block_length;
} DecoderObject;

/* The entry of `key`: from the one-entry cache, else the dict (then cached); 0, or -1 when
 * there is none usable (the fallback says why). */
static int decoder_find(DecoderObject *self, long key)
{
#if PY_VERSION_HEX < 0x030C0000
    const uint64_t version = ((PyDictObject *)self->types)->ma_version_tag;
#else
    const uint64_t version = 0; /* (3.12 deprecates the tag: no cache there) */
    self->cached_key = -1;
#endif
    if (key == self->cached_key && version == self->cached_version)
    {
        return 0;
    }
    PyObject *k = PyLong_FromLong(key);
    PyObject *entry = NULL == k ? NULL : PyDict_GetItemWithError(self->types, k); /* borrowed */
    Py_XDECREF(k);
    if (NULL == entry || !PyTuple_CheckExact(entry) || 3 != PyTuple_GET_SIZE(entry) ||
        !PyType_Check(PyTuple_GET_ITEM(entry, 0)) ||
        !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(entry, 0), &MessageBaseType))
    {
        PyErr_Clear();
        return -1;
    }
    const long block_length = PyLong_AsLong(PyTuple_GET_ITEM(entry, 2));
    if (block_length < 0)
    {
        PyErr_Clear();
        return -1;
    }
    Py_XSETREF(self->cached_class, (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(entry, 0)));
    Py_XSETREF(self->cached_type, Py_NewRef(PyTuple_GET_ITEM(entry, 1)));
    self->cached_block_length = block_length;
    self->cached_key = key;
    self->cached_version = version;
    return 0;
}

/* A buffer the flyweight may keep (bytes, bytearray, a C-contiguous memoryview; any other
 * buffer as a memoryview of it: what codec.py keeps) as a new reference, or NULL (no exception)
 * for the fallback to handle. */
static PyObject *keepable(PyObject *buffer)
{
    if (PyBytes_CheckExact(buffer) || PyByteArray_CheckExact(buffer))
    {
        return Py_NewRef(buffer);
    }
    PyObject *view = PyMemoryView_Check(buffer) ? Py_NewRef(buffer) : PyMemoryView_FromObject(buffer);
    if (NULL == view)
    {
        PyErr_Clear(); /* not a buffer: the fallback says so */
        return NULL;
    }
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    if (!(mv->flags & _Py_MEMORYVIEW_RELEASED) && !(mv->mbuf->flags & _Py_MANAGED_BUFFER_RELEASED) &&
        PyBuffer_IsContiguous(&mv->view, 'C'))
    {
        return view;
    }
    Py_DECREF(view);
    return NULL;
}

static PyObject *decoder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    DecoderObject *self = (DecoderObject *)callable;
    if (NULL == self->types || NULL == self->fallback)
    {
        PyErr_SetString(PyExc_ValueError, "Decoder: cleared by the garbage collector");
        return NULL;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (NULL != kwnames || nargs < 1 || nargs > 2 || (2 == nargs && !PyLong_CheckExact(args[1])))
    {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    const Py_ssize_t offset = 2 == nargs ? PyLong_AsSsize_t(args[1]) : 0;
    if (-1 == offset && PyErr_Occurred())
    {
        PyErr_Clear();
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    PyObject *buffer = keepable(args[0]);
    if (NULL == buffer)
    {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    Py_buffer view;
    const uint8_t *data;
    Py_ssize_t size;
    if (buffer_span(buffer, &view, &data, &size) < 0)
    {
        PyErr_Clear();
        Py_DECREF(buffer);
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    PyObject *result = NULL;
    if (offset >= 0 && offset <= size - 8)
    {
        const uint8_t *h = data + offset;
        const long block_length = (long)load_le(h, 2);
        const long key = ((long)load_le(h + 4, 2) << 16) | (long)load_le(h + 2, 2);
        const int version = (int)load_le(h + 6, 2);
        if (0 == decoder_find(self, key) && block_length >= self->cached_block_length &&
            block_length <= size - 8 - offset)
        {
            PyTypeObject *cls = self->cached_class;
            MessageObject *msg = (MessageObject *)cls->tp_alloc(cls, 0);
            if (NULL == msg)
            {
                span_release(&view);
                Py_DECREF(buffer);
                return NULL;
            }
            msg->type = Py_NewRef(self->cached_type);
            msg->buffer = Py_NewRef(buffer);
            msg->offset = offset;
            msg->version = version;
            msg->block_length = (int)block_length;
            result = (PyObject *)msg;
        }
    }
    span_release(&view);
    Py_DECREF(buffer);
    return NULL != result ? result : PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *types, *fallback;
    static char *names[] = { "types", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O:Decoder", names, &PyDict_Type, &types, &fallback))
    {
        return NULL;
    }
    DecoderObject *self = (DecoderObject *)type->tp_alloc(type, 0);
    if (NULL != self)
    {
        self->vectorcall = decoder_vectorcall;
        self->cached_key = -1;
        self->types = Py_NewRef(types);
        self->fallback = Py_NewRef(fallback);
    }
    return (PyObject *)self;
}

static int decoder_traverse(DecoderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->types);
    Py_VISIT(self->fallback);
    Py_VISIT(self->cached_class);
    Py_VISIT(self->cached_type);
    return 0;
}

static int decoder_clear(DecoderObject *self)
{
    self->cached_key = -1;
    Py_CLEAR(self->cached_class);
    Py_CLEAR(self->cached_type);
    Py_CLEAR(self->types);
    Py_CLEAR(self->fallback);
    return 0;
}

static void decoder_dealloc(DecoderObject *self)
{
    PyObject_GC_UnTrack(self);
    decoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Decoder",
    .tp_doc = "Decoder(types, fallback): decode(buffer, offset=0) -> the message its header names.",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(DecoderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = decoder_new,
    .tp_traverse = (traverseproc)decoder_traverse,
    .tp_clear = (inquiry)decoder_clear,
    .tp_dealloc = (destructor)decoder_dealloc,
};

/* -- Encoder: encode(**fields) -> bytes / encode_into(buffer, offset=0, **fields) -> int ---- */

#define LS_CODEC_MAX_FIELDS 64

typedef struct
{
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int into;           /* encode_into (else encode) */
    int count;          /* fields */
    Py_ssize_t length;  /* header + block */
    PyObject *length_object; /* what encode_into returns */
    uint8_t header[8];
    int kinds[LS_CODEC_MAX_FIELDS];
    int sizes[LS_CODEC_MAX_FIELDS];
    Py_ssize_t ats[LS_CODEC_MAX_FIELDS]; /* from the header */
    PyObject *names;    /* tuple of interned field names */
    PyObject *fallback; /* codec.py's encoder: every error, odd value and odd argument */
} EncoderObject;

/* Packs one value; 0, or 1 when the fallback must handle it (no exception left set). */
static int pack_value(int kind, int size, PyObject *value, uint8_t *p)
{
    switch (kind)
    {
        case K_U1:
        case K_U2:
        case K_U4:
        case K_U8:
        {
            if (!PyLong_Check(value))
            {
                return 1;
            }
            const unsigned long long v = PyLong_AsUnsignedLongLong(value);
            if ((unsigned long long)-1 == v && PyErr_Occurred())
            {
                PyErr_Clear();
                return 1;
            }
            if (size < 8 && v >> (8 * size))
            {
                return 1;
            }
            store_le(p, v, size);
            return 0;
        }
        case K_I1:
        case K_I2:
        case K_I4:
        case K_I8:
        {
            if (!PyLong_Check(value))
            {
                return 1;
            }
            int overflow;
            const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || (-1 == v && PyErr_Occurred()))
            {
                PyErr_Clear();
                return 1;
            }
            if (size < 8)
            {
                const long long limit = 1LL << (8 * size - 1);
                if (v < -limit || v >= limit)
                {
                    return 1;
                }
            }
            store_le(p, (uint64_t)v, size);
            return 0;
        }
        case K_F4:
        case K_F8:
        {
            if (!PyFloat_CheckExact(value) && !PyLong_CheckExact(value))
            {
                return 1; /* numpy.float32 keeps its exact bits: codec.py */
            }
            const double d = PyFloat_AsDouble(value);
            if (-1.0 == d && PyErr_Occurred())
            {
                PyErr_Clear();
                return 1;
            }
            if (K_F8 == kind)
            {
                uint64_t bits;
                memcpy(&bits, &d, sizeof bits);
                store_le(p, bits, 8);
                return 0;
            }
            const float f = (float)d; /* as struct's 'f' (PyFloat_Pack4) rounds */
            if (isinf(f) && !isinf(d))
            {
                return 1; /* too large: codec.py says so */
            }
            uint32_t bits;
            memcpy(&bits, &f, sizeof bits);
            store_le(p, bits, 4);
            return 0;
        }
        case K_BOOL:
            if (Py_True != value && Py_False != value)
            {
                return 1;
            }
            *p = Py_True == value;
            return 0;
        default:
        {
            if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) > size)
            {
                return 1;
            }
            const Py_ssize_t n = PyBytes_GET_SIZE(value);
            memcpy(p, PyBytes_AS_STRING(value), (size_t)n);
            memset(p + n, 0, (size_t)(size - n)); /* NUL padded: every byte set */
            return 0;
        }
    }
}

/* Header + every field at `out`, the values given by keyword; 0, or 1 for the fallback. */
static int pack_message(EncoderObject *self, PyObject *const *values, PyObject *kwnames, uint8_t *out)
{
    if (NULL == kwnames || PyTuple_GET_SIZE(kwnames) != self->count)
    {
        return 1;
    }
    PyObject *const *names = &PyTuple_GET_ITEM(self->names, 0);
    uint64_t seen = 0;
    memcpy(out, self->header, 8);
    for (int k = 0; k < self->count; k++)
    {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, k);
        int i = k < self->count && names[k] == kw ? k : -1; /* keywords in declaration order: no search */
        for (int j = 0; i < 0 && j < self->count; j++)
        {
            if (names[j] == kw)
            {
                i = j;
            }
        }
        for (int j = 0; i < 0 && j < self->count; j++)
        {
            if (PyUnicode_Check(kw) && 0 == PyUnicode_Compare(names[j], kw))
            {
                i = j;
            }
        }
        if (i < 0 || (seen >> i & 1) || pack_value(self->kinds[i], self->sizes[i], values[k], out + self->ats[i]))
        {
            return 1;
        }
        seen |= 1ULL << i;
    }
    return 0;
}

static PyObject *encoder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    EncoderObject *self = (EncoderObject *)callable;
    if (NULL == self->names || NULL == self->fallback || NULL == self->length_object)
    {
        PyErr_SetString(PyExc_ValueError, "Encoder: cleared by the garbage collector");
        return NULL;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!self->into)
    {
        if (0 == nargs)
        {
            PyObject *data = PyBytes_FromStringAndSize(NULL, self->length);
            if (NULL == data)
            {
                return NULL;
            }
            if (0 == pack_message(self, args, kwnames, (uint8_t *)PyBytes_AS_STRING(data)))
            {
                return data;
            }
            Py_DECREF(data);
        }
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    if (nargs < 1 || nargs > 2 || (2 == nargs && !PyLong_CheckExact(args[1])))
    {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    const Py_ssize_t offset = 2 == nargs ? PyLong_AsSsize_t(args[1]) : 0;
    if (-1 == offset && PyErr_Occurred())
    {
        PyErr_Clear();
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    Py_buffer view;
    uint8_t *data;
    Py_ssize_t size;
    if (buffer_span_flags(args[0], &view, &data, &size, PyBUF_WRITABLE) < 0)
    {
        PyErr_Clear();
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    int rc = 1;
    if (offset >= 0 && offset <= size - self->length)
    {
        /* Values are checked as they are packed: a region left part written by one the C path
         * refuses is cleared (no message there) before the fallback writes it whole or refuses.
         * (Packing runs no Python code: the buffer cannot change size or go away meanwhile.) */
        uint8_t *out = data + offset;
        rc = pack_message(self, args + nargs, kwnames, out);
        if (0 != rc)
        {
            memset(out, 0, (size_t)self->length);
        }
    }
    span_release(&view);
    if (0 == rc)
    {
        return Py_NewRef(self->length_object);
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *names, *kinds, *sizes, *ats, *fallback;
    Py_buffer header;
    int into;
    static char *names_[] = { "names", "kinds", "sizes", "ats", "header", "into", "fallback", NULL };
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!y*pO:Encoder", names_, &PyTuple_Type, &names,
            &PyTuple_Type, &kinds, &PyTuple_Type, &sizes, &PyTuple_Type, &ats, &header, &into, &fallback))
    {
        return NULL;
    }
    const Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (8 != header.len || n > LS_CODEC_MAX_FIELDS || PyTuple_GET_SIZE(kinds) != n || PyTuple_GET_SIZE(sizes) != n ||
        PyTuple_GET_SIZE(ats) != n)
    {
        PyBuffer_Release(&header);
        PyErr_Format(PyExc_ValueError, "Encoder: an 8-byte header and at most %d fields, each with a kind, "
                     "size and offset", LS_CODEC_MAX_FIELDS);
        return NULL;
    }
    EncoderObject *self = (EncoderObject *)type->tp_alloc(type, 0);
    if (NULL == self)
    {
        PyBuffer_Release(&header);
        return NULL;
    }
    memcpy(self->header, header.buf, 8);
    PyBuffer_Release(&header);
    self->vectorcall = encoder_vectorcall;
    self->into = into;
    self->count = (int)n;
    self->length = 8;
    self->fallback = Py_NewRef(fallback);
    self->names = PyTuple_New(n);
    if (NULL == self->names)
    {
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
    {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        const long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        const long size = PyLong_AsLong(PyTuple_GET_ITEM(sizes, i));
        const Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(ats, i));
        if (PyErr_Occurred() || !PyUnicode_Check(name) || kind < 0 || kind >= K_COUNT || size < 1 ||
            (K_BYTES != kind && size > 8) || at < 8 || at + size > 8 + 0xFFFF)
        {
            if (!PyErr_Occurred())
            {
                PyErr_Format(PyExc_ValueError, "Encoder: field %zd: bad kind %ld, size %ld or offset %zd", i, kind,
                             size, at);
            }
            Py_DECREF(self);
            return NULL;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name); /* keyword names are interned: compared by identity first */
        PyTuple_SET_ITEM(self->names, i, name);
        self->kinds[i] = (int)kind;
        self->sizes[i] = (int)size;
        self->ats[i] = at;
        if (at + size > self->length)
        {
            self->length = at + size;
        }
    }
    self->length_object = PyLong_FromSsize_t(self->length);
    if (NULL == self->length_object)
    {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int encoder_traverse(EncoderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->names);
    Py_VISIT(self->fallback);
    return 0;
}

static int encoder_clear(EncoderObject *self)
{
    Py_CLEAR(self->length_object);
    Py_CLEAR(self->names);
    Py_CLEAR(self->fallback);
    return 0;
}

static void encoder_dealloc(EncoderObject *self)
{
    PyObject_GC_UnTrack(self);
    encoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockstep._native._fastpath.Encoder",
    .tp_doc = "Encoder(names, kinds, sizes, ats, header, into, fallback): encode(**fields) -> bytes, or "
              "encode_into(buffer, offset=0, **fields) -> bytes written.",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(EncoderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = encoder_new,
    .tp_traverse = (traverseproc)encoder_traverse,
    .tp_clear = (inquiry)encoder_clear,
    .tp_dealloc = (destructor)encoder_dealloc,
};

int ls_fast_register_codec(PyObject *module)
{
    if (ls_fast_add_type(module, &MessageBaseType, "MessageBase") < 0 ||
        ls_fast_add_type(module, &FieldReaderType, "FieldReader") < 0 ||
        ls_fast_add_type(module, &DecoderType, "Decoder") < 0 || ls_fast_add_type(module, &EncoderType, "Encoder") < 0)
    {
        return -1;
    }
    return 0;
}
