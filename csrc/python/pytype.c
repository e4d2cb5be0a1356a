/*
 * pytype.c -- shmdict._speed: the hot methods of SharedDict as a CPython type.
 *
 * WHAT IT OWNS. SharedDictBase, the C base class of shmdict.SharedDict on
 * CPython: get, [], in, set, [] =, del, delete, pop, incr, get_many and
 * set_many, each one call into the core. Everything else of SharedDict stays
 * Python over cffi (shmdict/_dict.py); shmdict/_pure.py is the same base in
 * Python, used on PyPy or with SHMDICT_PURE=1, and behaves identically.
 *
 * ONE CORE. This file is binding code: it includes only Python.h and
 * shmdict.h and links no core code. At import, bind() asks the cffi module
 * (shmdict._shmdict) for its shmdict_api() table, so both bindings call
 * the same functions with the same statics (crash points, clock shift), and
 * the handle of a SharedDict is the very pointer its cffi half uses.
 *
 * WHY IT IS FAST. A cffi call costs more than the table work it wraps: it
 * builds an argument tuple, converts each argument, saves errno and releases
 * the GIL. Here a METH_FASTCALL method takes the key's UTF-8 straight from the
 * str (PyUnicode_AsUTF8AndSize caches it: no bytes object), reads a value into
 * a stack buffer and builds the result from it: one C call per operation for
 * every value type.
 *
 * THE GIL. Calls keep the GIL: most are over in well under a microsecond,
 * less than a release and reacquire would cost. The core calls on_block()
 * right before a thread would sleep on a busy dict lock, or run a bulk step
 * (compaction, index or file growth, flush, recovery), and only then is the
 * GIL released (PyEval_SaveThread); the operation runs to its end without it
 * (the core touches no Python object: the key and value buffers belong to
 * immutable objects the caller holds), and the GIL is taken back after the
 * core returns -- never while holding the dict lock, so a lock holder never
 * waits for the GIL while other processes wait for it. Batches of
 * GIL_BATCH keys or more, and values of GIL_BYTES bytes or more, release the
 * GIL for the whole call.
 *
 * CLOSING. close() may run on another thread while a call here waits for the
 * lock without the GIL (or, on a free-threaded build, at any time). Each call
 * holds a count in `users` while it uses the handle; `users` starts at 1 for
 * the open handle, close() drops that one, and whoever drops the last count
 * releases `keeper`, the cffi handle object whose collection unmaps the dict.
 * On a GIL build the count changes only under the GIL; on a free-threaded
 * build (Py_GIL_DISABLED) it is atomic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "shmdict.h"

#if PY_VERSION_HEX < 0x030A0000 /* 3.9: two helpers of 3.10 */
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
static int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *o)
{
    Py_INCREF(o);
    if (PyModule_AddObject(m, name, o) == 0)
        return 0;
    Py_DECREF(o);
    return -1;
}
#endif

#if defined(__GNUC__)
#define TLS_MODEL __attribute__((tls_model("initial-exec"))) /* no __tls_get_addr per call */
#else
#define TLS_MODEL
#endif

enum {
    STACK_BUF = 1024,     /* a value up to this size is read with no allocation */
    GIL_BYTES = 1 << 16,  /* values this large are copied without the GIL */
    GIL_BATCH = 64,       /* batches this long run without the GIL */
    PACK_STACK = 4096,    /* get_many / set_many: packed input on the stack up to this */
};

static const shmdict_api_t *api;                     /* set by bind() */
static PyObject *raise_rc_fn, *text_fn, *pairs_fn, *unpack_list_fn; /* shmdict._lib / _values helpers */
static PyObject *core_ffi, *handle_ctype; /* shmdict._shmdict.ffi and its "shmdict_t *" (bind) */
static PyObject *NOARG; /* pop(): no default given */
static PyObject *ONE;   /* incr(): the default delta */

/* ---- the GIL while blocked ------------------------------------------------------ */

static _Thread_local int armed TLS_MODEL;               /* this thread holds the GIL in a core call */
static _Thread_local PyThreadState *parked TLS_MODEL;   /* its thread state while released */

static void on_block(void)
{
    if (armed) { /* cffi calls (GIL already released) never arm */
        armed = 0;
        parked = PyEval_SaveThread();
    }
}

static inline void resume(void)
{
    if (parked) {
        PyThreadState *t = parked;
        parked = NULL;
        PyEval_RestoreThread(t);
    }
}

/* The alternative, for measurement only (benchmarks): release the GIL around
 * every core call, as cffi does. Set by _release_gil_per_call(). */
static int gil_per_call;

/* Run one core call without the GIL (long operations). */
#define CALL_NOGIL(rc, expr)                                                   \
    do {                                                                       \
        Py_BEGIN_ALLOW_THREADS(rc) = (expr);                                   \
        err = errno;                                                           \
        Py_END_ALLOW_THREADS                                                   \
    } while (0)

/* Run one core call with the GIL held, releasing it only if the core blocks. */
#define CALL(rc, expr)                                                         \
    do {                                                                       \
        if (__builtin_expect(gil_per_call, 0)) {                               \
            CALL_NOGIL(rc, expr);                                              \
            break;                                                             \
        }                                                                      \
        armed = 1;                                                             \
        (rc) = (expr);                                                         \
        armed = 0;                                                             \
        err = errno;                                                           \
        resume();                                                              \
    } while (0)

/* ---- the object and its handle ---------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    shmdict_t *h;       /* set once by _attach; valid while users > 0 and open */
    PyObject *keeper;   /* the cffi handle object: the mapping lives while it does */
    PyObject *name;     /* for the closed-handle message */
    Py_ssize_t users;   /* 1 for the open handle + calls in flight */
    int open;
} Base;

#ifdef Py_GIL_DISABLED
#define USERS_ADD(s) __atomic_fetch_add(&(s)->users, 1, __ATOMIC_SEQ_CST)
#define USERS_SUB(s) __atomic_sub_fetch(&(s)->users, 1, __ATOMIC_SEQ_CST)
#define IS_OPEN(s) __atomic_load_n(&(s)->open, __ATOMIC_SEQ_CST)
#define CLOSE(s) __atomic_exchange_n(&(s)->open, 0, __ATOMIC_SEQ_CST)
#define TAKE_KEEPER(s) __atomic_exchange_n(&(s)->keeper, NULL, __ATOMIC_SEQ_CST)
#else
#define USERS_ADD(s) ((s)->users++)
#define USERS_SUB(s) (--(s)->users)
#define IS_OPEN(s) ((s)->open)
static inline int close_flag(Base *s) { int was = s->open; s->open = 0; return was; }
#define CLOSE(s) close_flag(s)
static inline PyObject *take_keeper(Base *s) { PyObject *k = s->keeper; s->keeper = NULL; return k; }
#define TAKE_KEEPER(s) take_keeper(s)
#endif

static void leave(Base *self)
{
    if (USERS_SUB(self) == 0)
        Py_XDECREF(TAKE_KEEPER(self)); /* the last user: the mapping may go */
}

static void closed_error(Base *self)
{
    PyErr_Format(PyExc_ValueError, "operation on closed SharedDict %R", self->name ? self->name : Py_None);
}

/* The handle for one call (leave() after it), or NULL with ValueError. */
static inline shmdict_t *enter(Base *self)
{
    USERS_ADD(self);
    if (!IS_OPEN(self)) {
        leave(self);
        closed_error(self);
        return NULL;
    }
    return self->h;
}

/* ---- errors ------------------------------------------------------------------------- */

/* Raise the exception for core code rc (< 0), as shmdict._lib.raise_rc does:
 * one error table for both bindings. ESYS uses the errno saved after the call. */
static PyObject *fail(int rc, int err, PyObject *key)
{
    if (rc == SHMDICT_ESYS) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *r = PyObject_CallFunction(raise_rc_fn, "iO", rc, key ? key : Py_None);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_SystemError, "shmdict: code %d raised nothing", rc);
    return NULL;
}

/* type(o).__name__ (PyType_GetName is 3.11+). */
static PyObject *type_name(PyObject *o)
{
    return PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__name__");
}

static void type_error(const char *fmt, PyObject *o)
{
    PyObject *n = type_name(o);
    if (n) {
        PyErr_Format(PyExc_TypeError, fmt, n);
        Py_DECREF(n);
    }
}

/* ---- arguments ----------------------------------------------------------------------- */

/* A key's UTF-8 (borrowed from the str), or -1 with TypeError / ValueError. */
static inline int key_utf8(PyObject *key, const char **k, Py_ssize_t *n)
{
    if (!PyUnicode_Check(key)) {
        type_error("keys must be str, not %U", key);
        return -1;
    }
    *k = PyUnicode_AsUTF8AndSize(key, n);
    if (!*k)
        return -1;
    if (*n == 0 || *n > SHMDICT_MAX_KEY) {
        if (*n == 0)
            PyErr_SetString(PyExc_ValueError, "key must not be empty");
        else
            PyErr_Format(PyExc_ValueError, "key is %zd bytes; the limit is %d", *n, (int)SHMDICT_MAX_KEY);
        return -1;
    }
    return 0;
}

/* A value to store: what shmdict._pure.store_args gives. Subclasses of the
 * five types are stored as their base type. */
typedef struct {
    int type;
    int64_t i;
    double f;
    const char *buf;
    Py_ssize_t len;
} sval_t;

static int store_int(PyObject *v, sval_t *o)
{
    int ovf;
    long long x = PyLong_AsLongLongAndOverflow(v, &ovf);
    if (ovf) {
        PyErr_Format(PyExc_OverflowError, "int %S does not fit in a signed 64-bit integer", v);
        return -1;
    }
    if (x == -1 && PyErr_Occurred())
        return -1;
    o->type = SHMDICT_T_INT;
    o->i = x;
    return 0;
}

static int store_args(PyObject *v, sval_t *o)
{
    PyTypeObject *t = Py_TYPE(v);
    o->i = 0;
    o->f = 0.0;
    o->buf = NULL;
    o->len = 0;
    if (t == &PyLong_Type)
        return store_int(v, o);
    if (t == &PyUnicode_Type) {
        o->type = SHMDICT_T_STR;
        o->buf = PyUnicode_AsUTF8AndSize(v, &o->len);
        return o->buf ? 0 : -1;
    }
    if (t == &PyBytes_Type) {
        o->type = SHMDICT_T_BYTES;
        o->buf = PyBytes_AS_STRING(v);
        o->len = PyBytes_GET_SIZE(v);
        return 0;
    }
    if (PyBool_Check(v)) { /* bool cannot be subclassed: exact */
        o->type = SHMDICT_T_BOOL;
        o->i = v == Py_True;
        return 0;
    }
    if (PyFloat_Check(v)) {
        o->type = SHMDICT_T_FLOAT;
        o->f = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    /* subclasses (an IntEnum, a str subclass): stored as the base type */
    if (PyLong_Check(v))
        return store_int(v, o);
    if (PyUnicode_Check(v)) {
        o->type = SHMDICT_T_STR;
        o->buf = PyUnicode_AsUTF8AndSize(v, &o->len);
        return o->buf ? 0 : -1;
    }
    if (PyBytes_Check(v)) {
        o->type = SHMDICT_T_BYTES;
        o->buf = PyBytes_AS_STRING(v);
        o->len = PyBytes_GET_SIZE(v);
        return 0;
    }
    type_error("values must be bool, int, float, str or bytes, not %U", v);
    return -1;
}

/* A finite number of seconds, as shmdict._lib.seconds. */
static int seconds(PyObject *v, const char *what, double *out)
{
    if (PyBool_Check(v) || !(PyLong_Check(v) || PyFloat_Check(v))) {
        PyObject *n = type_name(v);
        if (n) {
            PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %U", what, n);
            Py_DECREF(n);
        }
        return -1;
    }
    double f = PyFloat_Check(v) ? PyFloat_AS_DOUBLE(v) : PyLong_AsDouble(v);
    if (f == -1.0 && PyErr_Occurred())
        return -1;
    if (!isfinite(f)) {
        PyErr_Format(PyExc_ValueError, "%s must be finite, not %R", what, v);
        return -1;
    }
    *out = f;
    return 0;
}

/* An incr operand, as shmdict._lib.number: int (not bool) or finite float. */
static int number(PyObject *v, const char *what, int *type, int64_t *i, double *f)
{
    if (PyBool_Check(v) || !(PyLong_Check(v) || PyFloat_Check(v))) {
        PyObject *n = type_name(v);
        if (n) {
            PyErr_Format(PyExc_TypeError, "%s must be an int or float, not %U", what, n);
            Py_DECREF(n);
        }
        return -1;
    }
    if (PyLong_Check(v)) {
        int ovf;
        long long x = PyLong_AsLongLongAndOverflow(v, &ovf);
        if (ovf) {
            PyErr_Format(PyExc_OverflowError, "%s %S does not fit in a signed 64-bit integer", what, v);
            return -1;
        }
        if (x == -1 && PyErr_Occurred())
            return -1;
        *type = SHMDICT_T_INT;
        *i = x;
        *f = 0.0;
        return 0;
    }
    double d = PyFloat_AS_DOUBLE(v);
    if (!isfinite(d)) {
        PyErr_Format(PyExc_ValueError, "%s must be finite, not %R", what, v);
        return -1;
    }
    *type = SHMDICT_T_FLOAT;
    *i = 0;
    *f = d;
    return 0;
}

/* Fast-call argument parsing: out[] holds the defaults (NULL = required)
 * and receives the arguments; names past npos are keyword-only. */
typedef struct {
    const char *fname;
    int npos, nall;
    const char *names[5];
    PyObject *kw[5]; /* the names, interned at import: a keyword is found by pointer */
} sig_t;

static sig_t SIG_GET = {"get", 2, 2, {"key", "default"}, {NULL}};
static sig_t SIG_POP = {"pop", 2, 2, {"key", "default"}, {NULL}};
static sig_t SIG_SET = {"set", 3, 3, {"key", "value", "exptime"}, {NULL}};
static sig_t SIG_INCR = {"incr", 3, 5, {"key", "delta", "exptime", "init", "init_ttl"}, {NULL}};
static sig_t SIG_SET_MANY = {"set_many", 2, 2, {"mapping", "exptime"}, {NULL}};
static sig_t *const SIGS[] = {&SIG_GET, &SIG_POP, &SIG_SET, &SIG_INCR, &SIG_SET_MANY};

static int intern_sigs(void)
{
    for (size_t j = 0; j < sizeof SIGS / sizeof SIGS[0]; j++)
        for (int i = 0; i < SIGS[j]->nall; i++)
            if (!SIGS[j]->kw[i] && !(SIGS[j]->kw[i] = PyUnicode_InternFromString(SIGS[j]->names[i])))
                return -1;
    return 0;
}

static int parse_args(const sig_t *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject **out)
{
    if (nargs > s->npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional argument%s (%zd given)", s->fname,
                     s->npos, s->npos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        int idx = -1;
        for (int i = 0; i < s->nall && idx < 0; i++)
            if (kw == s->kw[i]) /* keyword names in calls are interned: the usual match */
                idx = i;
        for (int i = 0; i < s->nall && idx < 0; i++)
            if (PyUnicode_CompareWithASCIIString(kw, s->names[i]) == 0)
                idx = i;
        if (idx < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", s->fname, kw);
            return -1;
        }
        if (idx < nargs) {
            PyErr_Format(PyExc_TypeError, "argument for %s() given by name ('%s') and position (%d)", s->fname,
                         s->names[idx], idx + 1);
            return -1;
        }
        out[idx] = args[nargs + j];
    }
    for (int i = 0; i < s->nall; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)", s->fname, s->names[i],
                         i + 1);
            return -1;
        }
    return 0;
}

/* ---- reading a value ----------------------------------------------------------------- */

static PyObject *make_text(Base *self, const char *p, Py_ssize_t n)
{
    PyObject *s = PyUnicode_DecodeUTF8(p, n, NULL);
    if (s || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return s;
    PyErr_Clear(); /* only a corrupted file stores bad UTF-8: CorruptError, as the pure path */
    PyObject *b = PyBytes_FromStringAndSize(p, n);
    if (b) {
        Py_XDECREF(PyObject_CallFunctionObjArgs(text_fn, b, self->name, NULL));
        Py_DECREF(b);
    }
    return NULL;
}

/* One get (pop = 0) or pop (pop = 1). Returns the value; or NULL with an
 * exception set; or NULL, no exception, and the core's code in *rc (not
 * found, a list, an error) for the caller to map. */
static PyObject *read_value(Base *self, shmdict_t *h, int pop, const char *k, Py_ssize_t kn, int *rc_out,
                            int *err_out)
{
    char stack[STACK_BUF];
    char *buf = stack, *heap = NULL;
    size_t cap = sizeof stack;
    shmdict_out_t out;
    PyObject *v = NULL;
    int rc, err = 0;
    for (;;) {
        if (cap < GIL_BYTES)
            CALL(rc, (pop ? api->pop : api->get)(h, k, (size_t)kn, &out, buf, cap));
        else
            CALL_NOGIL(rc, (pop ? api->pop : api->get)(h, k, (size_t)kn, &out, buf, cap));
        if (rc == SHMDICT_T_INT) {
            v = PyLong_FromLongLong(out.i);
            break;
        }
        if (rc == SHMDICT_T_STR || rc == SHMDICT_T_BYTES) {
            if (out.len <= cap) {
                v = rc == SHMDICT_T_BYTES ? PyBytes_FromStringAndSize(buf, (Py_ssize_t)out.len)
                                          : make_text(self, buf, (Py_ssize_t)out.len);
                break;
            }
        } else if (rc == SHMDICT_T_FLOAT) {
            v = PyFloat_FromDouble(out.f);
            break;
        } else if (rc == SHMDICT_T_BOOL) {
            v = PyBool_FromLong(out.i != 0);
            break;
        } else if (rc != SHMDICT_ERANGE) {
            *rc_out = rc;
            *err_out = err;
            break;
        }
        /* larger than the buffer (get: nothing copied; pop: ERANGE, nothing deleted): again, bigger */
        if (out.len > (uint64_t)PY_SSIZE_T_MAX) {
            PyErr_NoMemory();
            break;
        }
        PyMem_Free(heap);
        cap = (size_t)out.len;
        buf = heap = PyMem_Malloc(cap ? cap : 1);
        if (!heap) {
            PyErr_NoMemory();
            break;
        }
    }
    PyMem_Free(heap);
    return v;
}

/* ---- the methods --------------------------------------------------------------------- */

static PyObject *Base_get(Base *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sig_t *const sig = &SIG_GET;
    PyObject *a[2] = {NULL, Py_None};
    if (!kwnames && (nargs == 1 || nargs == 2)) {
        a[0] = args[0];
        if (nargs == 2)
            a[1] = args[1];
    } else if (parse_args(sig, args, nargs, kwnames, a)) {
        return NULL;
    }
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    const char *k;
    Py_ssize_t kn;
    int rc = 0, err = 0;
    PyObject *v = key_utf8(a[0], &k, &kn) ? NULL : read_value(self, h, 0, k, kn, &rc, &err);
    leave(self);
    if (v || PyErr_Occurred())
        return v;
    if (rc == SHMDICT_ENOTFOUND)
        return Py_NewRef(a[1]);
    return fail(rc, err, a[0]);
}

static PyObject *Base_subscript(Base *self, PyObject *key)
{
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    const char *k;
    Py_ssize_t kn;
    int rc = 0, err = 0;
    PyObject *v = key_utf8(key, &k, &kn) ? NULL : read_value(self, h, 0, k, kn, &rc, &err);
    leave(self);
    if (v || PyErr_Occurred())
        return v;
    return fail(rc, err, key); /* ENOTFOUND: KeyError(key) */
}

static int Base_contains(Base *self, PyObject *key)
{
    shmdict_t *h = enter(self);
    if (!h)
        return -1;
    const char *k;
    Py_ssize_t kn;
    int rc, err = 0, res = -1;
    shmdict_out_t out;
    if (!PyUnicode_Check(key)) {
        res = 0; /* a mapping of str keys holds no other key */
    } else if (!key_utf8(key, &k, &kn)) {
        CALL(rc, api->get(h, k, (size_t)kn, &out, NULL, 0)); /* str/bytes: nothing copied */
        if (rc > 0 || rc == SHMDICT_EWRONGTYPE) /* a list is present too */
            res = 1;
        else if (rc == SHMDICT_ENOTFOUND)
            res = 0;
        else
            fail(rc, err, key);
    }
    leave(self);
    return res;
}

static PyObject *Base_pop(Base *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sig_t *const sig = &SIG_POP;
    PyObject *a[2] = {NULL, NOARG};
    int has_default;
    if (!kwnames && (nargs == 1 || nargs == 2)) {
        a[0] = args[0];
        if (nargs == 2)
            a[1] = args[1];
    } else if (parse_args(sig, args, nargs, kwnames, a)) {
        return NULL;
    }
    has_default = a[1] != NOARG;
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    const char *k;
    Py_ssize_t kn;
    int rc = 0, err = 0;
    PyObject *v = key_utf8(a[0], &k, &kn) ? NULL : read_value(self, h, 1, k, kn, &rc, &err);
    leave(self);
    if (v || PyErr_Occurred())
        return v;
    if (rc == SHMDICT_ENOTFOUND && has_default)
        return Py_NewRef(a[1]);
    return fail(rc, err, a[0]);
}

/* set with exptime (NULL: none), shared by set and [] =. */
static int do_set(Base *self, PyObject *key, PyObject *value, PyObject *exptime)
{
    shmdict_t *h = enter(self);
    if (!h)
        return -1;
    const char *k;
    Py_ssize_t kn;
    sval_t sv;
    double ex = 0.0;
    int rc = -1, err = 0;
    if (key_utf8(key, &k, &kn) || store_args(value, &sv))
        goto done;
    if (exptime) {
        int truth = PyObject_IsTrue(exptime); /* a false exptime (0, None) means no TTL */
        if (truth < 0 || (truth && seconds(exptime, "exptime", &ex)))
            goto done;
    }
    if (sv.len < GIL_BYTES)
        CALL(rc, api->set(h, k, (size_t)kn, sv.type, sv.i, sv.f, sv.buf, (size_t)sv.len, ex, 0));
    else
        CALL_NOGIL(rc, api->set(h, k, (size_t)kn, sv.type, sv.i, sv.f, sv.buf, (size_t)sv.len, ex, 0));
    if (rc)
        fail(rc, err, key);
done:
    leave(self);
    return rc ? -1 : 0;
}

static PyObject *Base_set(Base *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sig_t *const sig = &SIG_SET;
    PyObject *a[3] = {NULL, NULL, NULL};
    if (!kwnames && (nargs == 2 || nargs == 3)) {
        a[0] = args[0];
        a[1] = args[1];
        a[2] = nargs == 3 ? args[2] : NULL;
    } else {
        a[2] = Py_None; /* parse_args wants a default; None and 0 both mean no TTL */
        if (parse_args(sig, args, nargs, kwnames, a))
            return NULL;
    }
    if (do_set(self, a[0], a[1], a[2]))
        return NULL;
    Py_RETURN_NONE;
}

/* 1 deleted, 0 absent, -1 error. */
static int do_delete(Base *self, PyObject *key)
{
    shmdict_t *h = enter(self);
    if (!h)
        return -1;
    const char *k;
    Py_ssize_t kn;
    int rc, err = 0, res = -1;
    if (!key_utf8(key, &k, &kn)) {
        CALL(rc, api->del(h, k, (size_t)kn));
        if (rc == 0)
            res = 1;
        else if (rc == SHMDICT_ENOTFOUND)
            res = 0;
        else
            fail(rc, err, key);
    }
    leave(self);
    return res;
}

static PyObject *Base_delete(Base *self, PyObject *key)
{
    int r = do_delete(self, key);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static int Base_ass_subscript(Base *self, PyObject *key, PyObject *value)
{
    if (value)
        return do_set(self, key, value, NULL);
    int r = do_delete(self, key);
    if (r == 0)
        PyErr_SetObject(PyExc_KeyError, key);
    return r > 0 ? 0 : -1;
}

static PyObject *Base_incr(Base *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sig_t *const sig = &SIG_INCR;
    PyObject *a[5] = {NULL, NULL, Py_None, Py_None, Py_None};
    a[1] = ONE;
    if (!kwnames && nargs >= 1 && nargs <= 3) {
        for (Py_ssize_t i = 0; i < nargs; i++)
            a[i] = args[i];
    } else if (parse_args(sig, args, nargs, kwnames, a)) {
        return NULL;
    }
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    const char *k;
    Py_ssize_t kn;
    int dt, it = 0, rc, err = 0;
    int64_t di, ii = 0;
    double df, fi = 0.0, ittl = 0.0, ex = 0.0;
    PyObject *res = NULL;
    shmdict_out_t out;
    if (key_utf8(a[0], &k, &kn) || number(a[1], "delta", &dt, &di, &df) ||
        (a[3] != Py_None && number(a[3], "init", &it, &ii, &fi)) ||
        (a[4] != Py_None && seconds(a[4], "init_ttl", &ittl)) || (a[2] != Py_None && seconds(a[2], "exptime", &ex)))
        goto done;
    CALL(rc, api->incr(h, k, (size_t)kn, dt, di, df, it, ii, fi, ittl, a[2] != Py_None, ex, &out));
    if (rc == SHMDICT_T_INT)
        res = PyLong_FromLongLong(out.i);
    else if (rc == SHMDICT_T_FLOAT)
        res = PyFloat_FromDouble(out.f);
    else
        fail(rc, err, a[0]);
done:
    leave(self);
    return res;
}

/* ---- batches --------------------------------------------------------------------------- */

/* A growable byte buffer that starts on the caller's stack. */
typedef struct {
    char *p;
    size_t len, cap;
    int heap;
} pack_t;

static int pack_need(pack_t *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap * 2 > b->len + more ? b->cap * 2 : b->len + more;
    char *p = b->heap ? PyMem_Realloc(b->p, cap) : PyMem_Malloc(cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    if (!b->heap)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static inline void put_bytes(pack_t *b, const void *p, size_t n)
{
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static int pack_key(pack_t *b, PyObject *key)
{
    const char *k;
    Py_ssize_t kn;
    if (key_utf8(key, &k, &kn) || pack_need(b, 4 + (size_t)kn))
        return -1;
    uint32_t n = (uint32_t)kn;
    put_bytes(b, &n, 4);
    put_bytes(b, k, (size_t)kn);
    return 0;
}

static int pack_item(pack_t *b, PyObject *key, PyObject *value)
{
    sval_t sv;
    if (pack_key(b, key) || store_args(value, &sv))
        return -1;
    if (sv.len > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value is larger than 4 GiB");
        return -1;
    }
    if (pack_need(b, 5 + (size_t)sv.len + 8))
        return -1;
    char t = (char)sv.type;
    put_bytes(b, &t, 1);
    if (sv.type == SHMDICT_T_STR || sv.type == SHMDICT_T_BYTES) {
        uint32_t n = (uint32_t)sv.len;
        put_bytes(b, &n, 4);
        put_bytes(b, sv.buf, (size_t)sv.len);
    } else if (sv.type == SHMDICT_T_FLOAT) {
        put_bytes(b, &sv.f, 8);
    } else {
        put_bytes(b, &sv.i, 8);
    }
    return 0;
}

/* Pack a list of (key, value) 2-tuples, as PyDict_Items and a pairs_fn call return. */
static int pack_pair_list(pack_t *b, PyObject *pairs)
{
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(pairs); j++) {
        PyObject *kv = PyList_GET_ITEM(pairs, j);
        if (pack_item(b, PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1)))
            return -1;
    }
    return 0;
}

static inline uint32_t u32_at(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* One packed value (u8 type, payload) at data[*pos] of len bytes. */
static PyObject *unpack_value(Base *self, const char *data, size_t len, size_t *pos)
{
    size_t at = *pos;
    int t = (unsigned char)data[at++];
    int64_t i;
    double f;
    if (t == SHMDICT_T_INT || t == SHMDICT_T_BOOL || t == SHMDICT_T_FLOAT) {
        if (len - at < 8)
            goto bad;
        *pos = at + 8;
        memcpy(&i, data + at, 8);
        memcpy(&f, data + at, 8);
        return t == SHMDICT_T_INT ? PyLong_FromLongLong(i) : t == SHMDICT_T_FLOAT ? PyFloat_FromDouble(f)
                                                                                   : PyBool_FromLong(i != 0);
    }
    if (len - at < 4)
        goto bad;
    uint32_t n = u32_at(data + at);
    at += 4;
    if (len - at < n)
        goto bad;
    *pos = at + n;
    if (t == SHMDICT_T_BYTES)
        return PyBytes_FromStringAndSize(data + at, n);
    if (t == SHMDICT_T_STR)
        return make_text(self, data + at, n);
    if (t == SHMDICT_T_LIST) { /* rare: decoded by the same Python helper as the pure path */
        PyObject *b = PyBytes_FromStringAndSize(data + at, n);
        PyObject *v = b ? PyObject_CallOneArg(unpack_list_fn, b) : NULL;
        Py_XDECREF(b);
        return v;
    }
bad:
    PyErr_SetString(PyExc_SystemError, "shmdict: malformed get_many output");
    return NULL;
}

static PyObject *Base_get_many(Base *self, PyObject *keys)
{
    if (PyUnicode_Check(keys) || PyBytes_Check(keys)) { /* "ab" is one key, not the keys "a" and "b" */
        PyErr_SetString(PyExc_TypeError, "get_many takes an iterable of keys, not a single str");
        return NULL;
    }
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    char kstack[PACK_STACK], ostack[PACK_STACK];
    pack_t kb = {kstack, 0, sizeof kstack, 0};
    char *obuf = ostack, *oheap = NULL;
    size_t ocap = sizeof ostack;
    PyObject *ks = PyTuple_CheckExact(keys) ? Py_NewRef(keys) : PySequence_Tuple(keys); /* a snapshot of the keys */
    PyObject *result = NULL;
    shmdict_out_t out;
    int64_t rc = 0;
    int err = 0;
    if (!ks)
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(ks);
    for (Py_ssize_t j = 0; j < n; j++)
        if (pack_key(&kb, PyTuple_GET_ITEM(ks, j)))
            goto done;
    for (;;) {
        if (n < GIL_BATCH)
            CALL(rc, api->get_many(h, kb.p, kb.len, (uint64_t)n, obuf, ocap, &out));
        else
            CALL_NOGIL(rc, api->get_many(h, kb.p, kb.len, (uint64_t)n, obuf, ocap, &out));
        if (rc != SHMDICT_ERANGE)
            break;
        PyMem_Free(oheap);
        ocap = (size_t)out.len;
        obuf = oheap = PyMem_Malloc(ocap);
        if (!oheap) {
            PyErr_NoMemory();
            goto done;
        }
    }
    if (rc < 0) {
        fail((int)rc, err, NULL);
        goto done;
    }
#if PY_VERSION_HEX < 0x030E0000
    result = _PyDict_NewPresized(n); /* no resizes while filling (about a third of the per-key cost) */
#else
    result = PyDict_New();
#endif
    if (!result)
        goto done;
    size_t pos = 0, used = (size_t)out.len;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (pos >= used) {
            PyErr_SetString(PyExc_SystemError, "shmdict: short get_many output");
            goto fail;
        }
        if (obuf[pos] == 0) { /* missing */
            pos++;
            continue;
        }
        PyObject *v = unpack_value(self, obuf, used, &pos);
        if (!v || PyDict_SetItem(result, PyTuple_GET_ITEM(ks, j), v)) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    leave(self);
    Py_XDECREF(ks);
    if (kb.heap)
        PyMem_Free(kb.p);
    PyMem_Free(oheap);
    return result;
}

/* Is seq (an exact list or tuple) made of exact 2-tuples only? */
static int all_pairs(PyObject *seq)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t j = 0; j < n; j++)
        if (!PyTuple_CheckExact(items[j]) || PyTuple_GET_SIZE(items[j]) != 2)
            return 0;
    return 1;
}

/* The sequence to pack from an exact list or tuple if it holds exact
 * 2-tuples only, else NULL (with an exception only on failure). On a
 * free-threaded build another thread may change a list at any moment, so the
 * list is snapshotted first (*snap, released by the caller) and the snapshot
 * is both checked and packed: never check one list and pack another. */
static PyObject *fast_pairs(PyObject *obj, PyObject **snap)
{
#ifdef Py_GIL_DISABLED
    if (PyList_CheckExact(obj)) {
        if (!(*snap = PySequence_Tuple(obj)))
            return NULL;
        obj = *snap;
    }
#else
    (void)snap; /* nothing runs Python code in between, so the list cannot change */
#endif
    return all_pairs(obj) ? obj : NULL;
}

static PyObject *Base_set_many(Base *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sig_t *const sig = &SIG_SET_MANY;
    PyObject *a[2] = {NULL, Py_None};
    if (!kwnames && (nargs == 1 || nargs == 2)) {
        a[0] = args[0];
        if (nargs == 2)
            a[1] = args[1];
    } else if (parse_args(sig, args, nargs, kwnames, a)) {
        return NULL;
    }
    shmdict_t *h = enter(self);
    if (!h)
        return NULL;
    char stack[PACK_STACK];
    pack_t b = {stack, 0, sizeof stack, 0};
    PyObject *pairs = NULL, *res = NULL, *seq;
    Py_ssize_t n = 0;
    double ex = 0.0;
    int64_t rc;
    int err = 0;
    shmdict_out_t out;
    if (PyDict_CheckExact(a[0])) {
#ifdef Py_GIL_DISABLED
        /* Another thread may change the dict at any moment: pack a snapshot of
         * its items, taken atomically (PyDict_Items locks the dict). */
        if (!(pairs = PyDict_Items(a[0])) || pack_pair_list(&b, pairs))
            goto done;
        n = PyList_GET_SIZE(pairs);
#else
        /* Nothing below runs Python code (exact str keys, the five value
         * types: no __hash__, __eq__ or __index__), so with the GIL held the
         * dict cannot change during the walk. */
        PyObject *key, *value;
        Py_ssize_t it = 0;
        while (PyDict_Next(a[0], &it, &key, &value)) {
            if (pack_item(&b, key, value))
                goto done;
            n++;
        }
#endif
    } else if ((PyList_CheckExact(a[0]) || PyTuple_CheckExact(a[0])) && (seq = fast_pairs(a[0], &pairs))) {
        /* a list or tuple of 2-tuples, the common non-dict input: no Python-level unpacking */
        n = PySequence_Fast_GET_SIZE(seq);
        PyObject **items = PySequence_Fast_ITEMS(seq);
        for (Py_ssize_t j = 0; j < n; j++)
            if (pack_item(&b, PyTuple_GET_ITEM(items[j], 0), PyTuple_GET_ITEM(items[j], 1)))
                goto done;
    } else if (PyErr_Occurred()) {
        goto done;
    } else {
        /* mapping.items() or another iterable of pairs: unpacked by Python, so its errors are Python's own */
        Py_CLEAR(pairs); /* a snapshot fast_pairs took and did not use */
        if (!(pairs = PyObject_CallOneArg(pairs_fn, a[0])) || pack_pair_list(&b, pairs))
            goto done;
        n = PyList_GET_SIZE(pairs);
    }
    int truth = PyObject_IsTrue(a[1]);
    if (truth < 0 || (truth && seconds(a[1], "exptime", &ex)))
        goto done;
    if (n < GIL_BATCH && b.len < GIL_BYTES)
        CALL(rc, api->set_many(h, b.p, b.len, (uint64_t)n, ex, 0, &out));
    else
        CALL_NOGIL(rc, api->set_many(h, b.p, b.len, (uint64_t)n, ex, 0, &out));
    if (rc < 0)
        fail((int)rc, err, NULL);
    else
        res = Py_NewRef(Py_None);
done:
    leave(self);
    Py_XDECREF(pairs);
    if (b.heap)
        PyMem_Free(b.p);
    return res;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

/* The address a cffi pointer object holds: ffi.cast("uintptr_t", cdata),
 * asked of shmdict._shmdict's own ffi. NULL with an exception if it fails. */
static void *cdata_address(PyObject *cdata)
{
    PyObject *u = PyObject_CallMethod(core_ffi, "cast", "sO", "uintptr_t", cdata);
    PyObject *n = u ? PyNumber_Long(u) : NULL;
    Py_XDECREF(u);
    void *p = n ? PyLong_AsVoidPtr(n) : NULL;
    Py_XDECREF(n);
    if (!p && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "NULL pointer");
    return p;
}

/* _attach(handle, name): use the dict of `handle`, the cffi handle object
 * (a `shmdict_t *` of shmdict._shmdict, from shmdict_create/attach), which
 * this object keeps alive. No address ever comes from Python as a number:
 * the pointer is read from the cdata by the core's own ffi, after checking
 * its type, so _attach(1, ...) is a TypeError, not a crash. Once per object. */
static PyObject *Base_attach(Base *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !core_ffi) {
        PyErr_SetString(PyExc_TypeError, "_attach(handle, name) after bind()");
        return NULL;
    }
    if (self->keeper || self->open) {
        PyErr_SetString(PyExc_RuntimeError, "SharedDictBase is already attached");
        return NULL;
    }
    PyObject *t = PyObject_CallMethod(core_ffi, "typeof", "O", args[0]);
    int ok = t ? PyObject_RichCompareBool(t, handle_ctype, Py_EQ) : -1;
    Py_XDECREF(t);
    if (ok <= 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "_attach needs a shmdict handle (a cffi 'shmdict_t *')");
        return NULL;
    }
    void *p = cdata_address(args[0]);
    if (!p)
        return NULL;
    self->h = p;
    Py_XSETREF(self->name, Py_NewRef(args[1]));
    self->keeper = Py_NewRef(args[0]);
    self->users = 1;
    self->open = 1;
    Py_RETURN_NONE;
}

/* _detach(): mark closed; the mapping goes when the last call in flight ends. */
static PyObject *Base_detach(Base *self, PyObject *Py_UNUSED(ignored))
{
    if (CLOSE(self))
        leave(self);
    Py_RETURN_NONE;
}

static void Base_dealloc(Base *self)
{
    Py_CLEAR(self->keeper);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Docstrings: each entry holds only its text signature (the "--" line gives
 * inspect.signature; pop's optional default has no text form, so it has none).
 * The text is the engine-neutral contract's, shmdict._api, which bind() hands
 * over: set_docs() points each ml_doc at "signature + contract text". CPython
 * reads ml_doc on every __doc__ / __text_signature__ access, so the method
 * descriptors made by PyType_Ready show it; calls never touch it. */
static PyMethodDef Base_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Base_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, key, default=None)\n--\n\n"},
    {"set", (PyCFunction)(void (*)(void))Base_set, METH_FASTCALL | METH_KEYWORDS,
     "set($self, /, key, value, exptime=0)\n--\n\n"},
    {"incr", (PyCFunction)(void (*)(void))Base_incr, METH_FASTCALL | METH_KEYWORDS,
     "incr($self, /, key, delta=1, exptime=None, *, init=None, init_ttl=None)\n--\n\n"},
    {"pop", (PyCFunction)(void (*)(void))Base_pop, METH_FASTCALL | METH_KEYWORDS, ""},
    {"delete", (PyCFunction)Base_delete, METH_O, "delete($self, key, /)\n--\n\n"},
    {"get_many", (PyCFunction)Base_get_many, METH_O, "get_many($self, keys, /)\n--\n\n"},
    {"set_many", (PyCFunction)(void (*)(void))Base_set_many, METH_FASTCALL | METH_KEYWORDS,
     "set_many($self, /, mapping, exptime=0)\n--\n\n"},
    {"_attach", (PyCFunction)(void (*)(void))Base_attach, METH_FASTCALL, NULL},
    {"_detach", (PyCFunction)Base_detach, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods Base_as_mapping = {
    .mp_subscript = (binaryfunc)Base_subscript,
    .mp_ass_subscript = (objobjargproc)Base_ass_subscript,
};

static PySequenceMethods Base_as_sequence = {
    .sq_contains = (objobjproc)Base_contains,
};

static PyTypeObject BaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmdict._speed.SharedDictBase",
    .tp_basicsize = sizeof(Base),
    .tp_dealloc = (destructor)Base_dealloc,
    .tp_as_mapping = &Base_as_mapping,
    .tp_as_sequence = &Base_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The hot methods of SharedDict, in C (shmdict._dict.SharedDict subclasses it).",
    .tp_methods = Base_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- the module ----------------------------------------------------------------------------- */

/* The signatures above, kept when set_docs() replaces ml_doc. */
#define N_METHODS (sizeof Base_methods / sizeof Base_methods[0])
static const char *method_sigs[N_METHODS];
static PyObject *docs_kept; /* a list of bytes: the strings the ml_doc pointers point into */

/* Point each public method's ml_doc at its signature followed by docs[name]
 * (a str); methods docs does not name keep theirs. */
static int set_docs(PyObject *docs)
{
    if (!PyDict_Check(docs)) {
        PyErr_SetString(PyExc_TypeError, "docs must be a dict of str");
        return -1;
    }
    PyObject *kept = PyList_New(0);
    if (!kept)
        return -1;
    const char *next[N_METHODS] = {0};
    for (size_t i = 0; Base_methods[i].ml_name; i++) {
        PyMethodDef *m = &Base_methods[i];
        if (!method_sigs[i])
            method_sigs[i] = m->ml_doc ? m->ml_doc : "";
        PyObject *doc = PyDict_GetItemString(docs, m->ml_name); /* borrowed */
        if (!doc)
            continue;
        if (!PyUnicode_Check(doc)) {
            PyErr_Format(PyExc_TypeError, "docs['%s'] must be a str", m->ml_name);
            goto fail;
        }
        const char *text = PyUnicode_AsUTF8(doc);
        if (!text)
            goto fail;
        PyObject *b = PyBytes_FromFormat("%s%s", method_sigs[i], text);
        if (!b || PyList_Append(kept, b) < 0) {
            Py_XDECREF(b);
            goto fail;
        }
        Py_DECREF(b);
        next[i] = PyBytes_AS_STRING(b); /* kept alive by the list */
    }
    for (size_t i = 0; Base_methods[i].ml_name; i++)
        if (next[i])
            Base_methods[i].ml_doc = next[i];
    Py_XSETREF(docs_kept, kept); /* the previous strings are no longer pointed to */
    return 0;
fail:
    Py_DECREF(kept);
    return -1;
}

/* The core's table, asked of the cffi module itself (shmdict._shmdict:
 * lib.shmdict_api()), never taken as a number from Python. Also keeps its
 * ffi and the type of a handle, for _attach. */
static const shmdict_api_t *core_table(void)
{
    PyObject *mod = PyImport_ImportModule("shmdict._shmdict");
    PyObject *ffi = mod ? PyObject_GetAttrString(mod, "ffi") : NULL;
    PyObject *lib = mod ? PyObject_GetAttrString(mod, "lib") : NULL;
    PyObject *ctype = ffi ? PyObject_CallMethod(ffi, "typeof", "s", "shmdict_t *") : NULL;
    PyObject *table = lib && ctype ? PyObject_CallMethod(lib, "shmdict_api", NULL) : NULL;
    const shmdict_api_t *t = NULL;
    if (table) {
        Py_XSETREF(core_ffi, Py_NewRef(ffi));
        Py_XSETREF(handle_ctype, Py_NewRef(ctype));
        t = cdata_address(table);
    }
    Py_XDECREF(table);
    Py_XDECREF(ctype);
    Py_XDECREF(lib);
    Py_XDECREF(ffi);
    Py_XDECREF(mod);
    return t;
}

/* bind(raise_rc, text, pairs, unpack_list, docs): once, at import. */
static PyObject *bind(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "bind(raise_rc, text, pairs, unpack_list, docs)");
        return NULL;
    }
    const shmdict_api_t *t = core_table();
    if (!t)
        return NULL;
    if (t->size < sizeof(shmdict_api_t) || t->abi != SHMDICT_API_ABI) {
        PyErr_Format(PyExc_ImportError, "shmdict._speed does not match the core (api abi %u, size %u)",
                     (unsigned)t->abi, (unsigned)t->size);
        return NULL;
    }
    if (set_docs(args[4]) < 0)
        return NULL;
    Py_XSETREF(raise_rc_fn, Py_NewRef(args[0]));
    Py_XSETREF(text_fn, Py_NewRef(args[1]));
    Py_XSETREF(pairs_fn, Py_NewRef(args[2]));
    Py_XSETREF(unpack_list_fn, Py_NewRef(args[3]));
    api = t;
    api->on_block(on_block);
    Py_RETURN_NONE;
}

/* _release_gil_per_call(flag): benchmarks compare the two GIL policies. */
static PyObject *release_gil_per_call(PyObject *Py_UNUSED(m), PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    gil_per_call = on;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_release_gil_per_call", release_gil_per_call, METH_O, "Measurement only: release the GIL on every call."},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, "Connect this module to the core (private)."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    if (PyType_Ready(&BaseType) < 0)
        return -1;
    if (!NOARG && !(NOARG = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)))
        return -1;
    if (!ONE && !(ONE = PyLong_FromLong(1)))
        return -1;
    if (intern_sigs())
        return -1;
    return PyModule_AddObjectRef(m, "SharedDictBase", (PyObject *)&BaseType);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, exec_module},
#if PY_VERSION_HEX >= 0x030C0000
    /* the bound core helpers are process-wide statics */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* Safe without the GIL: the dict's lock serialises the table, and each
     * object's handle state is atomic (see CLOSING above). */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmdict._speed",
    .m_doc = "The hot path of shmdict.SharedDict as a CPython type (private).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__speed(void) { return PyModuleDef_Init(&module_def); }
