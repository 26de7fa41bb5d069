/* The guard's front door: a C audit hook that calls helixhooks._guard only when it has to.
 *
 * CPython calls every audit hook on every audited event in the process, and some are dense
 * (copy.deepcopy raises "builtins.id" once per object). Calling a hook written in Python costs
 * ~0.2 us per event even when it returns at once. This one returns in a few ns (on top of the
 * ~45 ns CPython spends on any hook, building the event's arguments) unless a plugin is admitted
 * (set_engaged) and the event is one the guard checks (install's names; a read only while some
 * plugin admitted is held to read scopes).
 *
 * Even then most such events are the host's own (its file writes, renames, reads): no plugin
 * frame on the stack, the thread not one a plugin started, no Sandbox.execute under way. The
 * guard's Python hook would find that out by walking the whole stack in Python, a couple of
 * microseconds; this hook finds it out in C (plugin_may_act) and returns. Only when a plugin may
 * be acting, or when it cannot tell, does it call the Python callback, as CPython calls a Python
 * hook: with the same two arguments, with tracing off, and an exception it raises propagating to
 * the audited operation. What makes a frame a plugin's is the guard's to say: this hook asks its
 * module_owner once per module name and remembers the answer until set_engaged is next called.
 *
 * State is per process, like the hook itself (PySys_AddAuditHook's hooks cannot be removed).
 * The hook runs with the GIL held and its state is written with the GIL held; a free-threaded
 * build is not supported (it fails to compile, on purpose: setup.py marks the extension
 * optional, and _guard then falls back to a Python hook).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <frameobject.h> /* 3.10: the frame's f_globals */
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

/* Public from 3.11; the struct field before. */
static PyObject *PyFrame_GetGlobals(PyFrameObject *frame)
{
    return Py_NewRef(frame->f_globals);
}
#endif

#if PY_VERSION_HEX < 0x030D0000
/* Public from 3.13: getattr(obj, name, None) without making an AttributeError to drop. */
#define PyObject_GetOptionalAttr _PyObject_LookupAttr
#endif

/* What an event is to the guard while no plugin admitted is held to read scopes. */
typedef enum {
    CHECKED, /* looked at */
    READ,    /* not looked at: install's reads (a directory listing) */
    OPEN,    /* CPython's "open": not looked at when it opens for reading */
} Kind;

typedef struct {
    uint32_t hash;
    const char *name; /* NULL: an empty slot; else the UTF-8 of `str`, which owns it */
    PyObject *str;    /* passed to the callback: no string made per call */
    Kind kind;
} Entry;

static Entry *table;
static size_t mask; /* table size - 1, a power of two at least twice the names: probes stay short */
/* The names' first bytes: most events are turned away on theirs, unhashed ("builtins.id", the
 * densest event there is, while no checked name starts with 'b'). */
static char first[256];
static PyObject *callback;
static PyInterpreterState *home; /* the interpreter that installed the hook, whose callback it is */
static int engaged;
static int reads = 1; /* whether some plugin admitted is held to read scopes (set_engaged) */

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

/* What says who is acting, from helixhooks._guard (install's arguments): */
static PyObject *module_owner; /* module name -> its plugin's owner, or None */
static PyObject *acting;       /* the ContextVar Sandbox.execute sets: an owner, or None */
static PyObject *threads;      /* threading._active: what threading.current_thread() reads */
static PyObject *tag;          /* the attribute of a Thread a plugin started: its owner */
static int tagging;            /* whether any thread has been tagged (note_tag): before, none is */
static PyObject *dunder_name;

/* module name -> module_owner's answer (its owner, or None). A new dict at every set_engaged
 * (the guard calls it whenever the plugins admitted change), and a new epoch; a walk under way
 * keeps the ones it started with. */
static PyObject *owners;
static uint64_t epoch;

/* In front of owners, its answers by the name's address: a stack's frames come from a few
 * modules, and comparing a pointer is cheaper than a dict lookup. Each slot holds its name, so
 * that the address is not another string's; a slot of an older epoch is empty. Exact str only:
 * a subclass's __hash__ and __eq__ are its own, and the dict asks them every time. */
#define SEEN 256
static struct {
    PyObject *name;
    uint64_t epoch;
    int owned;
} seen[SEEN];

/* Whether the module named `name` is a plugin's: 1 or 0, -1 on an error. `*cached`: whether the
 * answer came from `seen`, running no Python code (a dict lookup may call a key's __eq__). */
static int owned(PyObject *name, PyObject *known, uint64_t at, int *cached)
{
    size_t slot = 0;
    int exact = PyUnicode_CheckExact(name);
    *cached = 0;
    if (exact) {
        uintptr_t address = (uintptr_t)name;
        slot = (size_t)((address >> 4) ^ (address >> 12)) % SEEN;
        if (seen[slot].name == name && seen[slot].epoch == at) {
            *cached = 1;
            return seen[slot].owned;
        }
    }
    int found;
    PyObject *owner = PyDict_GetItemWithError(known, name);
    if (owner != NULL) {
        found = owner != Py_None;
    }
    else if (PyErr_Occurred() || (owner = PyObject_CallOneArg(module_owner, name)) == NULL) {
        return -1;
    }
    else {
        found = owner != Py_None;
        int stored = PyDict_SetItem(known, name, owner);
        Py_DECREF(owner);
        if (stored < 0) {
            return -1;
        }
    }
    if (exact) {
        Py_XSETREF(seen[slot].name, Py_NewRef(name));
        seen[slot].epoch = at;
        seen[slot].owned = found;
    }
    return found;
}

/* Whether some frame on the stack is a plugin's: its module's __name__ (read from its globals, as
 * the guard reads frame.f_globals.get("__name__")) has an owner. 1 also when it cannot tell. */
static int plugin_frame(void)
{
    if (owners == NULL) {
        return 1;
    }
    PyObject *known = Py_NewRef(owners); /* module_owner runs Python code: set_engaged may run */
    uint64_t at = epoch;
    PyFrameObject *frame = (PyFrameObject *)Py_XNewRef(PyEval_GetFrame());
    /* The globals of the frame above, when its answer came from `seen`: nothing has run since its
     * __name__ was read that could change it, and a run of frames from one module (a recursion,
     * a module's helpers) reads it once. Alive: the frames on the stack hold their globals. */
    PyObject *last = NULL;
    int found = 0;
    while (frame != NULL && found == 0) {
        PyObject *globals = PyFrame_GetGlobals(frame);
        PyObject *name = NULL;
        if (globals == last) {
            /* the same name, not a plugin's */
        }
        else if (!PyDict_CheckExact(globals)) {
            found = 1; /* a mapping whose get() may be its own: the guard's walk calls it */
        }
        else if ((name = PyDict_GetItemWithError(globals, dunder_name)) != NULL) {
            Py_INCREF(name); /* borrowed from globals, let go of below */
        }
        else if (PyErr_Occurred()) {
            found = -1;
        }
        else {
            name = Py_NewRef(Py_None);
        }
        if (name != NULL) {
            int cached;
            found = owned(name, known, at, &cached);
            last = cached ? globals : NULL;
            Py_DECREF(name);
        }
        Py_DECREF(globals);
        PyFrameObject *back = found == 0 ? PyFrame_GetBack(frame) : NULL;
        if (back == NULL && found == 0 && PyErr_Occurred()) {
            found = -1; /* no frame object for the one below: not the bottom of the stack */
        }
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    Py_DECREF(known);
    return found;
}

/* Whether the current thread is one a plugin started: threading.current_thread()'s tag. A thread
 * threading does not know (current_thread() would make it a _DummyThread) has none. */
static int tagged_thread(void)
{
    if (!tagging) {
        return 0;
    }
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ident == NULL) {
        return -1;
    }
    PyObject *thread = Py_XNewRef(PyDict_GetItemWithError(threads, ident));
    Py_DECREF(ident);
    if (thread == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *owner;
    int found = PyObject_GetOptionalAttr(thread, tag, &owner);
    Py_DECREF(thread);
    if (found > 0) {
        found = owner != Py_None;
        Py_DECREF(owner);
    }
    return found;
}

/* Whether a plugin may be acting on this thread now, by the guard's rules (_acting_owner): a
 * plugin frame on the stack, else the thread's tag, else Sandbox.execute's ContextVar. 0 settles
 * the event as the host's; 1 leaves it to the guard, which also decides where this hit an error
 * (its own walk meets the same one, or does not walk at all for this event); -1 for an
 * exception that is no error of the check's (KeyboardInterrupt, from Python code it ran), which
 * is not dropped: it aborts the audited operation, as it would from the guard's Python hook. */
static int plugin_may_act(void)
{
    PyObject *executing;
    int found = PyContextVar_Get(acting, NULL, &executing);
    if (found == 0) {
        found = executing != Py_None;
        Py_XDECREF(executing);
    }
    if (found == 0) {
        found = tagged_thread();
    }
    if (found == 0) {
        found = plugin_frame();
    }
    if (found < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_Clear();
        return 1;
    }
    return found;
}

/* Whether an "open" event, (path, mode, flags), opens for writing, as _guard._writes tells: a
 * mode str with a letter other than r, b, t, U (w, a, x, +); no mode (os.open), a write bit in
 * flags. -1: cannot tell (arguments CPython does not pass; a str subclass's strip() is its own). */
static int opens_to_write(PyObject *args)
{
    if (PyTuple_GET_SIZE(args) < 3) {
        return -1;
    }
    PyObject *mode = PyTuple_GET_ITEM(args, 1);
    if (PyUnicode_CheckExact(mode)) {
        for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(mode); i++) {
            Py_UCS4 c = PyUnicode_READ_CHAR(mode, i);
            if (c != 'r' && c != 'b' && c != 't' && c != 'U') {
                return 1;
            }
        }
        return 0;
    }
    PyObject *flags = PyTuple_GET_ITEM(args, 2);
    if (PyUnicode_Check(mode) || !(flags == Py_None || PyLong_CheckExact(flags))) {
        return -1;
    }
    long value = flags == Py_None ? 0 : PyLong_AsLong(flags);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* out of a long's range: the guard's Python decides */
        return -1;
    }
    return (value & (O_WRONLY | O_RDWR | O_APPEND | O_CREAT | O_TRUNC)) != 0;
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
    /* Reads are held to scopes only by a plugin that declares some: with none admitted, the
     * guard lets every read go, whoever makes it. */
    if (!reads && (e->kind == READ || (e->kind == OPEN && opens_to_write(args) == 0))) {
        return 0;
    }
    PyThreadState *tstate = PyThreadState_Get();
    PyObject *argv[2] = {e->str, args};
    /* Tracing off for the check too: module_owner and a Thread's attributes may be Python code. */
    PyThreadState_EnterTracing(tstate);
    int may = plugin_may_act();
    PyObject *result = NULL;
    if (may > 0) {
        result = PyObject_Vectorcall(callback, argv, 2, NULL);
    }
    else if (may == 0) {
        result = Py_NewRef(Py_None);
    }
    PyThreadState_LeaveTracing(tstate);
    if (result == NULL) {
        return -1; /* CPython aborts the audited operation with this exception */
    }
    Py_DECREF(result);
    return 0;
}

PyDoc_STRVAR(install_doc,
"install(callback, names, reads, module_owner, acting, threads, tag, /)\n--\n\n"
"Add the audit hook, once per process: while engaged, it calls callback(event, args) for the\n"
"events named in the tuple names, and for no other, unless no plugin may be acting: none of the\n"
"stack's modules has an owner by module_owner(name), the current thread (threads[ident], as\n"
"threading.current_thread() finds it) has None or no attribute tag, the ContextVar acting is\n"
"None. While set_engaged says reads are not checked, the events in reads (some of names) and\n"
"\"open\" for reading are not either.");

/* The entry of each str in `names`, NULL for one that is not: after an exception set. */
static Entry *entry_of(PyObject *str)
{
    const char *name = PyUnicode_Check(str) ? PyUnicode_AsUTF8(str) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "the event names must be str");
        }
        return NULL;
    }
    uint32_t h = fnv1a(name);
    Entry *e = lookup(name, h);
    if (e->name == NULL) {
        *e = (Entry){h, name, Py_NewRef(str), strcmp(name, "open") == 0 ? OPEN : CHECKED};
        first[(unsigned char)name[0]] = 1;
    }
    return e;
}

static PyObject *install(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    (void)module;
    if (argc != 7 || !PyCallable_Check(argv[0]) || !PyTuple_Check(argv[1])
        || !PyTuple_Check(argv[2]) || !PyCallable_Check(argv[3])
        || !PyContextVar_CheckExact(argv[4]) || !PyDict_CheckExact(argv[5])
        || !PyUnicode_Check(argv[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "install(callback, names, reads, module_owner, acting, threads, tag): a "
                        "callable, two tuples of str, a callable, a ContextVar, a dict, a str");
        return NULL;
    }
    if (table != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the audit hook is installed already");
        return NULL;
    }
    if (dunder_name == NULL && (dunder_name = PyUnicode_InternFromString("__name__")) == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(argv[1]) + PyTuple_GET_SIZE(argv[2]);
    size_t size = 8;
    while (size < 2 * (size_t)count) {
        size *= 2;
    }
    table = PyMem_Calloc(size, sizeof(Entry));
    if (table == NULL) {
        return PyErr_NoMemory();
    }
    mask = size - 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(argv[1]); i++) {
        if (entry_of(PyTuple_GET_ITEM(argv[1], i)) == NULL) {
            goto fail;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(argv[2]); i++) {
        Entry *e = entry_of(PyTuple_GET_ITEM(argv[2], i));
        if (e == NULL) {
            goto fail;
        }
        e->kind = READ;
    }
    callback = Py_NewRef(argv[0]);
    module_owner = Py_NewRef(argv[3]);
    acting = Py_NewRef(argv[4]);
    threads = Py_NewRef(argv[5]);
    tag = Py_NewRef(argv[6]);
    home = PyInterpreterState_Get();
    /* Raises "sys.addaudithook" first: a hook there already may refuse (then nothing is added). */
    if (PySys_AddAuditHook(hook, NULL) < 0) {
        Py_CLEAR(callback);
        Py_CLEAR(module_owner);
        Py_CLEAR(acting);
        Py_CLEAR(threads);
        Py_CLEAR(tag);
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
"set_engaged(flag, reads=True, /)\n--\n\n"
"Whether the hook looks at events at all (some plugin admitted); off, it returns at once. And\n"
"whether it looks at reads (some plugin admitted is held to read scopes). Called whenever what\n"
"module_owner answers may have changed: the answers kept are dropped.");

static PyObject *set_engaged(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    (void)module;
    if (argc < 1 || argc > 2) {
        PyErr_SetString(PyExc_TypeError, "set_engaged(flag, reads=True)");
        return NULL;
    }
    int value = PyObject_IsTrue(argv[0]);
    int checked = argc < 2 ? 1 : PyObject_IsTrue(argv[1]);
    if (value < 0 || checked < 0) {
        return NULL;
    }
    PyObject *fresh = PyDict_New();
    if (fresh == NULL) {
        return NULL;
    }
    Py_XSETREF(owners, fresh);
    epoch++;
    engaged = value;
    reads = checked;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(note_tag_doc,
"note_tag()\n--\n\n"
"A thread has been tagged: from now on the hook looks for the current thread's tag.");

static PyObject *note_tag(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    tagging = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", (PyCFunction)(void (*)(void))install, METH_FASTCALL, install_doc},
    {"set_engaged", (PyCFunction)(void (*)(void))set_engaged, METH_FASTCALL, set_engaged_doc},
    {"note_tag", note_tag, METH_NOARGS, note_tag_doc},
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
