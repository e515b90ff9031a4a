/* collector._lineproto: the line protocol's field sets, formatted in C.

   What collector/lineproto.py's template path writes, byte for byte, without its
   per-interface Python work. It is handed Python objects that msgspec decoded and
   checked (or that the collector built): it parses no input. For a field set of exact
   ints within int64 and finite exact floats (the numbers the agent sends), it writes
   `name=value` pairs joined by commas, `i` after an int's value: the names are the
   escaped `name=` bytes of `prefixes` (filled by lineproto.py), the values are the
   tokens of msgspec's JSON encoding of them (the `encode` handed in: the encoder the
   Python path uses, so the same shortest round-trip floats), checked to be exactly one
   token per value. For anything else (a bool, a string, an int beyond int64, a float
   that is not finite, a name without a prefix, an interface without a cached tag set,
   an encoding not as expected) it returns None and the caller takes the Python path,
   which writes those, counts and logs. Only the CPython C API; every output byte is
   written through a bounds check against a size computed beforehand; every borrowed
   reference used across a call that could run Python code is held. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define X86_AVX_STATE 1
#endif

#if LLONG_MAX != 9223372036854775807LL || LLONG_MIN != (-9223372036854775807LL - 1)
#error "long long must be InfluxDB's int64"
#endif

/* Bumped when the functions' contract changes: lineproto.py uses only the version it
   knows (a stale build left in the source tree is not used). */
#define LINEPROTO_VERSION 2

/* Field names are looked up once per position of a call, then compared by identity
   (msgspec shares one str object per key across dicts): at most this many positions. */
#define NAME_SLOTS 64

static PyObject *str_fields, *str_if_index, *str_name, *str_descr, *str_alias;

/* ------------------------------------------------------------------ collecting */

typedef struct {
    PyObject *values;   /* list: every value, in order (what `encode` is given) */
    PyObject *names;    /* list: each value's `name=` bytes */
    PyObject *heads;    /* list: each line's measurement and tags (or NULL: none) */
    Py_ssize_t *counts; /* each line's number of fields */
    Py_ssize_t lines, capacity;
    Py_ssize_t ints;    /* how many of values are ints (each gets an `i`) */
    PyObject *slot_key[NAME_SLOTS], *slot_prefix[NAME_SLOTS]; /* strong references */
} Batch;

static int
batch_init(Batch *b, Py_ssize_t capacity, int with_heads)
{
    memset(b, 0, sizeof(*b));
    b->capacity = capacity > 0 ? capacity : 1;
    b->values = PyList_New(0);
    b->names = PyList_New(0);
    b->heads = with_heads ? PyList_New(0) : NULL;
    b->counts = PyMem_New(Py_ssize_t, b->capacity);
    if (b->counts == NULL) {
        PyErr_NoMemory();
    }
    if (b->values == NULL || b->names == NULL || (with_heads && b->heads == NULL) ||
        b->counts == NULL) {
        return -1;
    }
    return 0;
}

static void
batch_free(Batch *b)
{
    Py_XDECREF(b->values);
    Py_XDECREF(b->names);
    Py_XDECREF(b->heads);
    PyMem_Free(b->counts);
    for (int i = 0; i < NAME_SLOTS; i++) {
        Py_XDECREF(b->slot_key[i]);
        Py_XDECREF(b->slot_prefix[i]);
    }
}

/* 1: an exact int within int64; 2: a finite exact float; 0: anything else; -1: error. */
static int
kind_of(PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (x == -1 && !overflow && PyErr_Occurred()) {
            return -1;
        }
        return overflow ? 0 : 1;
    }
    if (PyFloat_CheckExact(value)) {
        return isfinite(PyFloat_AS_DOUBLE(value)) ? 2 : 0;
    }
    return 0;
}

/* `key`'s `name=` (a new reference), NULL with no error set when there is none. */
static PyObject *
prefix_of(Batch *b, PyObject *prefixes, PyObject *key, Py_ssize_t position)
{
    if (position < NAME_SLOTS && b->slot_key[position] == key) {
        return Py_NewRef(b->slot_prefix[position]);
    }
    PyObject *prefix = PyDict_GetItemWithError(prefixes, key); /* borrowed */
    if (prefix == NULL || !PyBytes_CheckExact(prefix)) {
        return NULL;
    }
    Py_INCREF(prefix);
    if (position < NAME_SLOTS) {
        PyObject *old_key = b->slot_key[position], *old_prefix = b->slot_prefix[position];
        b->slot_key[position] = Py_NewRef(key);
        b->slot_prefix[position] = Py_NewRef(prefix);
        Py_XDECREF(old_key);
        Py_XDECREF(old_prefix);
    }
    return prefix;
}

/* One field set into the batch as a line (with `head`, a new reference or NULL) if it has
   any field. 1: done; 0: not for this code (the caller's slow path); -1: error. */
static int
batch_add(Batch *b, PyObject *fields, PyObject *prefixes, Py_ssize_t *count)
{
    Py_ssize_t pos = 0, position = 0;
    PyObject *key, *value;
    *count = 0;
    if (!PyDict_CheckExact(fields)) {
        return 0;
    }
    while (PyDict_Next(fields, &pos, &key, &value)) {
        int result = 0;
        Py_INCREF(key);
        Py_INCREF(value);
        if (PyUnicode_CheckExact(key)) {
            PyObject *prefix = prefix_of(b, prefixes, key, position);
            if (prefix == NULL) {
                result = PyErr_Occurred() ? -1 : 0;
            }
            else {
                result = kind_of(value);
                if (result > 0 &&
                    (PyList_Append(b->values, value) < 0 || PyList_Append(b->names, prefix) < 0)) {
                    result = -1;
                }
                if (result == 1) {
                    b->ints++;
                }
                Py_DECREF(prefix);
            }
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (result <= 0) {
            return result;
        }
        position++;
    }
    *count = position;
    return 1;
}

static int
batch_line(Batch *b, PyObject *head, Py_ssize_t count)
{
    if (b->lines >= b->capacity) {
        PyErr_SetString(PyExc_SystemError, "_lineproto: more lines than interfaces");
        return -1;
    }
    if (b->heads != NULL && PyList_Append(b->heads, head) < 0) {
        return -1;
    }
    b->counts[b->lines++] = count;
    return 0;
}

/* ------------------------------------------------------------------ writing */

static int
grow(Py_ssize_t *size, Py_ssize_t n)
{
    if (n < 0 || n > PY_SSIZE_T_MAX - *size) {
        PyErr_SetString(PyExc_OverflowError, "_lineproto: output too large");
        return -1;
    }
    *size += n;
    return 0;
}

typedef struct {
    char *out;
    Py_ssize_t at, size;
} Writer;

static int
put(Writer *w, const char *src, Py_ssize_t n)
{
    if (n < 0 || n > w->size - w->at) {
        PyErr_SetString(PyExc_SystemError, "_lineproto: output size miscounted");
        return -1;
    }
    memcpy(w->out + w->at, src, (size_t)n);
    w->at += n;
    return 0;
}

static int
put_char(Writer *w, char c)
{
    if (w->at >= w->size) {
        PyErr_SetString(PyExc_SystemError, "_lineproto: output size miscounted");
        return -1;
    }
    w->out[w->at++] = c;
    return 0;
}

/* The batch's lines from `encoded` (msgspec's JSON of b->values), each with its head and
   `stamp` when given. A new bytes; Py_None (a new reference) when `encoded` is not one
   token per value between brackets; NULL on error. */
static PyObject *
batch_write(Batch *b, PyObject *encoded, PyObject *stamp)
{
    Py_ssize_t n = PyList_GET_SIZE(b->values);
    if (!PyBytes_CheckExact(encoded) || n < 1) {
        Py_RETURN_NONE;
    }
    const char *s = PyBytes_AS_STRING(encoded);
    Py_ssize_t len = PyBytes_GET_SIZE(encoded);
    /* at least one character a token, a comma between two */
    if (len < 2 * n + 1 || s[0] != '[' || s[len - 1] != ']') {
        Py_RETURN_NONE;
    }
    /* tokens, commas between fields, `i`s, names, heads and stamps */
    Py_ssize_t size = 0;
    Py_ssize_t stamp_len = stamp != NULL ? PyBytes_GET_SIZE(stamp) : 0;
    if (grow(&size, len - 2 - (n - 1)) < 0 || grow(&size, n - b->lines) < 0 ||
        grow(&size, b->ints) < 0) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (grow(&size, PyBytes_GET_SIZE(PyList_GET_ITEM(b->names, j))) < 0) {
            return NULL;
        }
    }
    for (Py_ssize_t k = 0; k < b->lines; k++) {
        if ((b->heads != NULL && grow(&size, PyBytes_GET_SIZE(PyList_GET_ITEM(b->heads, k))) < 0) ||
            grow(&size, stamp_len) < 0) {
            return NULL;
        }
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        return NULL;
    }
    Writer w = {PyBytes_AS_STRING(result), 0, size};
    Py_ssize_t p = 1, j = 0; /* p: where token j starts in s */
    for (Py_ssize_t k = 0; k < b->lines; k++) {
        if (b->heads != NULL) {
            PyObject *head = PyList_GET_ITEM(b->heads, k);
            if (put(&w, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)) < 0) {
                goto error;
            }
        }
        for (Py_ssize_t f = 0; f < b->counts[k]; f++, j++) {
            if (j >= n || p >= len) {
                PyErr_SetString(PyExc_SystemError, "_lineproto: more fields than values");
                goto error;
            }
            /* the token ends at the next comma, the last one at the closing bracket */
            const char *comma = memchr(s + p, ',', (size_t)(len - 1 - p));
            Py_ssize_t end = comma != NULL ? comma - s : len - 1;
            if (end == p || (j < n - 1) != (comma != NULL)) {
                Py_DECREF(result);
                Py_RETURN_NONE;
            }
            PyObject *name = PyList_GET_ITEM(b->names, j);
            if ((f > 0 && put_char(&w, ',') < 0) ||
                put(&w, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) < 0 ||
                put(&w, s + p, end - p) < 0 ||
                (PyLong_CheckExact(PyList_GET_ITEM(b->values, j)) && put_char(&w, 'i') < 0)) {
                goto error;
            }
            p = end + 1;
        }
        if (stamp != NULL && put(&w, PyBytes_AS_STRING(stamp), stamp_len) < 0) {
            goto error;
        }
    }
    if (j != n || p != len || w.at != size) {
        PyErr_SetString(PyExc_SystemError, "_lineproto: output size miscounted");
        goto error;
    }
    return result;
error:
    Py_DECREF(result);
    return NULL;
}

/* Encodes the batch's values and writes its lines: a new reference (bytes or Py_None). */
static PyObject *
batch_finish(Batch *b, PyObject *encode, PyObject *stamp)
{
    if (PyList_GET_SIZE(b->values) == 0) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    PyObject *encoded = PyObject_CallOneArg(encode, b->values);
    if (encoded == NULL) {
        return NULL;
    }
    PyObject *result = batch_write(b, encoded, stamp);
    Py_DECREF(encoded);
    return result;
}

/* ------------------------------------------------------------------ the functions */

PyDoc_STRVAR(format_fields_doc,
"format_fields(fields, prefixes, encode, /)\n--\n\n"
"One field set, `name=1i,other=2.5` (b'' when empty); None: take the Python path.");

static PyObject *
format_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "format_fields takes (fields, prefixes, encode)");
        return NULL;
    }
    PyObject *fields = args[0], *prefixes = args[1], *encode = args[2];
    if (!PyDict_CheckExact(prefixes)) {
        PyErr_SetString(PyExc_TypeError, "format_fields: prefixes must be a dict");
        return NULL;
    }
    Batch b;
    PyObject *result = NULL;
    Py_ssize_t count;
    if (batch_init(&b, 1, 0) < 0) {
        goto done;
    }
    int ok = batch_add(&b, fields, prefixes, &count);
    if (ok <= 0) {
        result = ok < 0 ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    if (count > 0 && batch_line(&b, NULL, count) < 0) {
        goto done;
    }
    result = batch_finish(&b, encode, NULL);
done:
    batch_free(&b);
    return result;
}

PyDoc_STRVAR(format_interfaces_doc,
"format_interfaces(interfaces, heads, prefixes, stamp, encode, /)\n--\n\n"
"The lines of a sample's interfaces, each `head fields stamp`, and how many there are;\n"
"None: take the Python path for this sample.");

static PyObject *
format_interfaces(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "format_interfaces takes (interfaces, heads, prefixes, stamp, encode)");
        return NULL;
    }
    PyObject *heads = args[1], *prefixes = args[2], *stamp = args[3], *encode = args[4];
    if (!PyDict_CheckExact(heads) || !PyDict_CheckExact(prefixes) || !PyBytes_CheckExact(stamp)) {
        PyErr_SetString(PyExc_TypeError,
                        "format_interfaces: heads and prefixes must be dicts, stamp bytes");
        return NULL;
    }
    PyObject *items = PySequence_Tuple(args[0]); /* held: the list may change meanwhile */
    if (items == NULL) {
        return NULL;
    }
    Batch b;
    PyObject *result = NULL, *body = NULL;
    Py_ssize_t nitems = PyTuple_GET_SIZE(items);
    if (batch_init(&b, nitems, 1) < 0) {
        goto done;
    }
    for (Py_ssize_t k = 0; k < nitems; k++) {
        PyObject *item = PyTuple_GET_ITEM(items, k);
        PyObject *fields = PyObject_GetAttr(item, str_fields);
        if (fields == NULL) {
            goto done;
        }
        Py_ssize_t count;
        int ok = batch_add(&b, fields, prefixes, &count);
        Py_DECREF(fields);
        if (ok <= 0) {
            result = ok < 0 ? NULL : Py_NewRef(Py_None);
            goto done;
        }
        if (count == 0) {
            continue; /* no line, as on the Python path */
        }
        /* the tag set lineproto.py cached under (if_index, name, descr, alias) */
        PyObject *key = PyTuple_New(4);
        if (key == NULL) {
            goto done;
        }
        PyObject *const attrs[4] = {str_if_index, str_name, str_descr, str_alias};
        for (int a = 0; a < 4; a++) {
            PyObject *v = PyObject_GetAttr(item, attrs[a]);
            if (v == NULL) {
                Py_DECREF(key);
                goto done;
            }
            PyTuple_SET_ITEM(key, a, v);
        }
        /* exact types only: their hash and comparison run no Python code */
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(key, 0)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(key, 1)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(key, 2)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(key, 3))) {
            Py_DECREF(key);
            result = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *head = PyDict_GetItemWithError(heads, key); /* borrowed */
        Py_DECREF(key);
        if (head == NULL || !PyBytes_CheckExact(head) || PyBytes_GET_SIZE(head) == 0) {
            if (!PyErr_Occurred()) {
                result = Py_NewRef(Py_None); /* not cached yet: the Python path caches it */
            }
            goto done;
        }
        if (batch_line(&b, head, count) < 0) { /* the list holds it from here */
            goto done;
        }
    }
    body = batch_finish(&b, encode, stamp);
    if (body == NULL || body == Py_None) {
        result = body;
        body = NULL;
        goto done;
    }
    result = Py_BuildValue("(On)", body, b.lines);
done:
    Py_XDECREF(body);
    Py_DECREF(items);
    batch_free(&b);
    return result;
}

/* ------------------------------------------------------------------ AVX state */

#ifdef X86_AVX_STATE
static int cpu_has_avx;    /* vzeroupper is an instruction here (and the OS keeps the state) */
static int cpu_has_xinuse; /* XGETBV with ECX=1 tells which state is in use */

__attribute__((target("avx"))) static void
vzeroupper(void)
{
    __builtin_ia32_vzeroupper();
}

static void
avx_state_init(void)
{
    unsigned a, b, c, d;
    __builtin_cpu_init();
    cpu_has_avx = __builtin_cpu_supports("avx");
    cpu_has_xinuse = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) &&
                     __get_cpuid_count(0xD, 1, &a, &b, &c, &d) && ((a >> 2) & 1);
}
#endif

PyDoc_STRVAR(zero_upper_doc,
"zero_upper(/)\n--\n\n"
"Clear the upper halves of the AVX registers (vzeroupper; nothing where there is no AVX).\n"
"ISA-L returns from its AVX-512 deflate without it (intel/isa-l#24), and every legacy\n"
"SSE instruction the process runs afterwards (CPython's doubles and copies among them)\n"
"then pays a false dependency on them until something clears them.");

static PyObject *
zero_upper(PyObject *module, PyObject *unused)
{
#ifdef X86_AVX_STATE
    if (cpu_has_avx) {
        vzeroupper();
    }
#endif
    Py_RETURN_NONE;
}

PyDoc_STRVAR(avx_upper_in_use_doc,
"avx_upper_in_use(/)\n--\n\n"
"Whether the upper halves of the AVX registers hold state (XINUSE's YMM and ZMM_Hi256\n"
"bits, from XGETBV with ECX=1); None where the processor cannot say.");

static PyObject *
avx_upper_in_use(PyObject *module, PyObject *unused)
{
#ifdef X86_AVX_STATE
    if (cpu_has_xinuse) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
        return PyBool_FromLong((lo & ((1u << 2) | (1u << 6))) != 0);
    }
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"zero_upper", zero_upper, METH_NOARGS, zero_upper_doc},
    {"avx_upper_in_use", avx_upper_in_use, METH_NOARGS, avx_upper_in_use_doc},
    {"format_fields", (PyCFunction)(void (*)(void))format_fields, METH_FASTCALL,
     format_fields_doc},
    {"format_interfaces", (PyCFunction)(void (*)(void))format_interfaces, METH_FASTCALL,
     format_interfaces_doc},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    return PyModule_AddIntConstant(module, "VERSION", LINEPROTO_VERSION);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collector._lineproto",
    .m_doc = "Line protocol field sets in C (see collector/lineproto.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__lineproto(void)
{
#ifdef X86_AVX_STATE
    avx_state_init();
#endif
    if (str_fields == NULL &&
        ((str_fields = PyUnicode_InternFromString("fields")) == NULL ||
         (str_if_index = PyUnicode_InternFromString("if_index")) == NULL ||
         (str_name = PyUnicode_InternFromString("name")) == NULL ||
         (str_descr = PyUnicode_InternFromString("descr")) == NULL ||
         (str_alias = PyUnicode_InternFromString("alias")) == NULL)) {
        Py_CLEAR(str_fields);
        Py_CLEAR(str_if_index);
        Py_CLEAR(str_name);
        Py_CLEAR(str_descr);
        return NULL;
    }
    return PyModuleDef_Init(&module_def);
}
