/* The guard's front door: a C audit hook that calls helixhooks._guard only when it has to.
 *
 * CPython calls every audit hook on every audited event in the process, and some are dense
 * (copy.deepcopy raises "builtins.id" once per object). Calling a hook written in Python costs
 * ~0.2 us per event even when it returns at once. This one returns in a few ns (on top of the
 * ~45 ns CPython spends on any hook, building the event's arguments) unless a plugin is admitted
 * (set_engaged) and the event is one the guard checks (install's names); only then does it call
 * the Python callback, as CPython calls a Python hook: with the same two arguments, with
 * tracing off, and an exception it raises propagating to the audited operation.
 *
 * State is per process, like the hook itself (PySys_AddAuditHook's hooks cannot be removed).
 * The hook runs with the GIL held and `engaged` is written with the GIL held; a free-threaded
 * build is not supported (it fails to compile, on purpose: setup.py marks the extension
 * optional, and _guard then falls back to a Python hook).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef Py_GIL_DISABLED
#error "helixhooks._audit relies on the GIL; the guard uses its Python hook on this build"
#endif

#if PY_VERSION_HEX < 0x030B0000
/* Public from 3.11; what 3.10's sys.audit does around a Python hook. */
static void PyThreadState_EnterTracing(PyThreadState *tstate)
{
    tstate->tracing++;
    tstate->cframe->use_tracing = 0;
}

static void PyThreadState_LeaveTracing(PyThreadState *tstate)
{
    tstate->tracing--;
    tstate->cframe->use_tracing = (tstate->c_tracefunc != NULL || tstate->c_profilefunc != NULL);
}
#endif

typedef struct {
    uint32_t hash;
    const char *name; /* NULL: an empty slot; else the UTF-8 of `str`, which owns it */
    PyObject *str;    /* passed to the callback: no string made per call */
} Entry;

static Entry *table;
static size_t mask; /* table size - 1, a power of two at least twice the names: probes stay short */
/* The names' first bytes: most events are turned away on theirs, unhashed ("builtins.id", the
 * densest event there is, while no checked name starts with 'b'). */
static char first[256];
static PyObject *callback;
static PyInterpreterState *home; /* the interpreter that installed the hook, whose callback it is */
static int engaged;

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

static Entry *lookup(const char *name, uint32_t h)
{
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        Entry *e = &table[i];
        if (e->name == NULL || (e->hash == h && strcmp(e->name, name) == 0)) {
            return e;
        }
    }
}

static int hook(const char *event, PyObject *args, void *unused)
{
    (void)unused;
    if (!engaged || !first[(unsigned char)event[0]]) {
        return 0;
    }
    Entry *e = lookup(event, fnv1a(event));
    /* The hook is the whole runtime's: a subinterpreter's events must not run our callback. */
    if (e->name == NULL || PyInterpreterState_Get() != home) {
        return 0;
    }
    PyThreadState *tstate = PyThreadState_Get();
    PyObject *argv[2] = {e->str, args};
    PyThreadState_EnterTracing(tstate);
    PyObject *result = PyObject_Vectorcall(callback, argv, 2, NULL);
    PyThreadState_LeaveTracing(tstate);
    if (result == NULL) {
        return -1; /* CPython aborts the audited operation with this exception */
    }
    Py_DECREF(result);
    return 0;
}

PyDoc_STRVAR(install_doc,
"install(callback, names, /)\n--\n\n"
"Add the audit hook, once per process: while engaged, it calls callback(event, args) for the\n"
"events named in the tuple names, and for no other.");

static PyObject *install(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    (void)module;
    if (argc != 2 || !PyCallable_Check(argv[0]) || !PyTuple_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError, "install(callback, names): a callable, a tuple of str");
        return NULL;
    }
    if (table != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the audit hook is installed already");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(argv[1]);
    size_t size = 8;
    while (size < 2 * (size_t)count) {
        size *= 2;
    }
    table = PyMem_Calloc(size, sizeof(Entry));
    if (table == NULL) {
        return PyErr_NoMemory();
    }
    mask = size - 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *str = PyTuple_GET_ITEM(argv[1], i);
        const char *name = PyUnicode_Check(str) ? PyUnicode_AsUTF8(str) : NULL;
        if (name == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "the event names must be str");
            }
            goto fail;
        }
        uint32_t h = fnv1a(name);
        Entry *e = lookup(name, h);
        if (e->name == NULL) {
            Py_INCREF(str);
            *e = (Entry){h, name, str};
            first[(unsigned char)name[0]] = 1;
        }
    }
    Py_INCREF(argv[0]);
    callback = argv[0];
    home = PyInterpreterState_Get();
    /* Raises "sys.addaudithook" first: a hook there already may refuse (then nothing is added). */
    if (PySys_AddAuditHook(hook, NULL) < 0) {
        Py_CLEAR(callback);
        goto fail;
    }
    Py_RETURN_NONE;

fail:
    for (size_t i = 0; i <= mask; i++) {
        Py_XDECREF(table[i].str);
    }
    PyMem_Free(table);
    table = NULL;
    memset(first, 0, sizeof first);
    return NULL;
}

PyDoc_STRVAR(set_engaged_doc,
"set_engaged(flag, /)\n--\n\n"
"Whether the hook looks at events at all (some plugin admitted); off, it returns at once.");

static PyObject *set_engaged(PyObject *module, PyObject *flag)
{
    (void)module;
    int value = PyObject_IsTrue(flag);
    if (value < 0) {
        return NULL;
    }
    engaged = value;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", (PyCFunction)(void (*)(void))install, METH_FASTCALL, install_doc},
    {"set_engaged", set_engaged, METH_O, set_engaged_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "helixhooks._audit",
    .m_doc = "The guard's audit hook in C: it calls the guard only for the events it checks.",
    .m_size = -1, /* process-wide state: the hook cannot be removed, nor installed twice */
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__audit(void)
{
    return PyModule_Create(&module);
}
