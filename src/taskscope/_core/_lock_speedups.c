/* The lock monitor's asyncio.Lock path in C: the fields of a primitive's state read and
 * written on every acquisition and wait (LockCore, PrimitiveState's base class), and
 * the bookkeeping of an acquisition that did not wait and of its release (LockHooks:
 * enter, exit, and aenter/aexit for `async with`), and of one that blocks (wait_begin,
 * wait_end). Pure-Python twins:
 * PureLockCore in taskscope/_core/_accel.py and `_pure_lock_hooks` in
 * taskscope/_backends/_compat_sync.py, used when this module is not built or
 * TASKSCOPE_PURE_PYTHON is set.
 *
 * Why: in Python the bookkeeping of one uncontended `async with lock:` cost ~6,500 CPU
 * instructions (twice plain asyncio's whole acquire/release), most of it bytecode
 * dispatch and attribute access on the state; here the state's fields are read and
 * written by offset. The asyncio side of the fast path (`_locked`, `_waiters`, waking
 * the next waiter) stays in the Python wrappers, verbatim asyncio, where the
 * interpreter's specialised attribute access is as cheap as C.
 *
 * Everything rare calls back into the Python functions given at construction, so there
 * is one implementation of each: the first acquisition from a new site
 * (SyncTracker.hold), finding the task when the loop is not cached (asyncio_task), a
 * semaphore-style release (SyncTracker.unhold), a hold over the threshold
 * (SyncTracker.long_hold). An acquisition that blocks (wait_begin/wait_end) is here
 * too; its rare parts call back the same way: a new wait site (SyncTracker.site), the
 * wait-for graph walk once a holder is itself blocked (check_deadlock), a second hold
 * (add_hold).
 *
 * Only the stable public C API is used (CPython 3.11-3.13). A failure raises into the
 * Python wrapper, which reports it through taskscope._core._faults.internal_error and
 * carries on exactly as without taskscope.
 */
#define PY_SSIZE_T_CLEAN
#include "_cshared.h"
#include <limits.h>
#include <structmember.h>
#if defined(__linux__)
#include <time.h>
#define CLOCK_IS_MONOTONIC 1
#endif

/* ---------------------------------------------------------------- LockCore */

/* Hold-time buckets counted in the struct before they reach the `hist` dict: a dict
   update costs ~400 instructions, more than the rest of a release. Successive holds
   of one lock mostly fall into one or two buckets, and its waits into one or two more
   (wait buckets are WAIT_BUCKETS up). */
#define WAIT_BUCKETS 64
#define PENDING 4

/* The fields of a primitive's state used by the hot path (PrimitiveState's base class;
   the pure-Python twin is taskscope._core._accel.PureLockCore). Python code sees them
   as ordinary attributes. */
typedef struct {
    PyObject_HEAD
    PyObject *holder;    /* None or the hold tuple (key, record, since, code, lasti);
                            NULL while `held_key` is set */
    PyObject *hist;      /* None or {bucket: count} */
    PyObject *hold_max;  /* int, ns */
    PyObject *site_code; /* None or the code object that last acquired it */
    PyObject *loop;      /* None or the loop it was last acquired on */
    PyObject *ref;       /* None or the weak reference to the primitive */
    PyObject *kind;      /* "lock", "semaphore", ... */
    PyObject *waits;     /* None or {task key: (record, since, code, lasti, operation)} */
    PyObject *holds;     /* None or the holds other than `holder` (a list) */
    PyObject *wait_max;  /* int, ns */
    PyObject *cancelled_waits; /* int */
    /* The parts of a hold recorded here that Python has not looked at yet: the tuple
       is built only when `holder` is read (most holds end unseen). (The object fields
       run from `holder` to `held_code`: lock_core_traverse visits them as one span.) */
    PyObject *held_key; /* NULL when there is none */
    PyObject *held_record;
    PyObject *held_code;
    long long held_since;
    int held_lasti;
    /* Hold-time counts not yet added to `hist`: bucket (-1: free slot) and count. */
    int pending_index[PENDING];
    Py_ssize_t pending_count[PENDING];
} LockCore;

/* T_OBJECT_EX (never NULL but after `del`, which nothing does) rather than T_OBJECT:
   the interpreter specialises attribute access only for those, and the monitor's
   Python code reads these fields on every slow-path operation. */
static PyMemberDef lock_core_members[] = {
    {"hold_max", T_OBJECT_EX, offsetof(LockCore, hold_max), 0, "The longest hold, ns."},
    {"site_code", T_OBJECT_EX, offsetof(LockCore, site_code), 0,
     "The user code that last acquired it, or None."},
    {"loop", T_OBJECT_EX, offsetof(LockCore, loop), 0, "The loop it was last acquired on."},
    {"ref", T_OBJECT_EX, offsetof(LockCore, ref), 0, "The weak reference to the primitive."},
    {"kind", T_OBJECT_EX, offsetof(LockCore, kind), 0, "The kind of primitive."},
    {"waits", T_OBJECT_EX, offsetof(LockCore, waits), 0,
     "Current waiters by task key, or None."},
    {"holds", T_OBJECT_EX, offsetof(LockCore, holds), 0,
     "Current holds other than `holder`, oldest first, or None."},
    {"wait_max", T_OBJECT_EX, offsetof(LockCore, wait_max), 0, "The longest wait, ns."},
    {"cancelled_waits", T_OBJECT_EX, offsetof(LockCore, cancelled_waits), 0,
     "Waits cancelled or timed out."},
    {NULL},
};

static PyObject *zero, *one, *str_holds, *str_acquire, *str_release, *str_ref, *str_fut_waiter,
    *str_cancelled_types, *str_lock;

static PyObject *
lock_core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    LockCore *self = (LockCore *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->holder = Py_NewRef(Py_None);
        self->hist = Py_NewRef(Py_None);
        self->hold_max = Py_NewRef(zero);
        self->site_code = Py_NewRef(Py_None);
        self->loop = Py_NewRef(Py_None);
        self->ref = Py_NewRef(Py_None);
        self->kind = Py_NewRef(Py_None);
        self->waits = Py_NewRef(Py_None);
        self->holds = Py_NewRef(Py_None);
        self->wait_max = Py_NewRef(zero);
        self->cancelled_waits = Py_NewRef(zero);
        for (int i = 0; i < PENDING; i++) {
            self->pending_index[i] = -1;
        }
    }
    return (PyObject *)self;
}

/* hist[index] += n; 0, or -1 with an exception set. */
static int
count(PyObject *hist, long index, Py_ssize_t n)
{
    PyObject *key = PyLong_FromLong(index);
    if (key == NULL) {
        return -1;
    }
    PyObject *old = PyDict_GetItemWithError(hist, key);
    PyObject *new;
    if (old == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        new = PyLong_FromSsize_t(n);
        if (new == NULL) {
            Py_DECREF(key);
            return -1;
        }
    }
    else {
        Py_ssize_t seen = PyLong_AsSsize_t(old);
        new = seen == -1 && PyErr_Occurred() ? NULL : PyLong_FromSsize_t(seen + n);
        if (new == NULL) {
            Py_DECREF(key);
            return -1;
        }
    }
    int status = PyDict_SetItem(hist, key, new);
    Py_DECREF(new);
    Py_DECREF(key);
    return status;
}

/* Add the pending counts to `hist` (created when None); 0, or -1 with an exception
   set. */
static int
flush(LockCore *self)
{
    for (int i = 0; i < PENDING; i++) {
        if (self->pending_index[i] < 0) {
            continue;
        }
        if (self->hist == NULL || self->hist == Py_None) {
            PyObject *hist = PyDict_New();
            if (hist == NULL) {
                return -1;
            }
            Py_XSETREF(self->hist, hist);
        }
        if (!PyDict_Check(self->hist)) {
            PyErr_SetString(PyExc_TypeError, "hist is not a dict");
            return -1;
        }
        PyObject *hist = Py_NewRef(self->hist);
        int status = count(hist, self->pending_index[i], self->pending_count[i]);
        Py_DECREF(hist);
        if (status < 0) {
            return -1;
        }
        self->pending_index[i] = -1;
        self->pending_count[i] = 0;
    }
    return 0;
}

/* Count a hold in bucket `index`; 0, or -1 with an exception set. */
static int
count_hold(LockCore *self, int index)
{
    for (int i = 0; i < PENDING; i++) {
        if (self->pending_index[i] == index) {
            self->pending_count[i]++;
            return 0;
        }
    }
    for (int i = 0; i < PENDING; i++) {
        if (self->pending_index[i] < 0) {
            self->pending_index[i] = index;
            self->pending_count[i] = 1;
            return 0;
        }
    }
    if (flush(self) < 0) {
        return -1;
    }
    self->pending_index[0] = index;
    self->pending_count[0] = 1;
    return 0;
}

/* Set the holder to `value` (a new reference, stolen), dropping a pending one. */
static void
set_holder(LockCore *self, PyObject *value)
{
    Py_CLEAR(self->held_key);
    Py_CLEAR(self->held_record);
    Py_CLEAR(self->held_code);
    Py_XSETREF(self->holder, value);
}

/* A hold tuple (a new reference), or NULL with an exception set. */
static PyObject *
hold_tuple(PyObject *key, PyObject *record, long long since_ns, PyObject *code, int lasti_i)
{
    PyObject *since = PyLong_FromLongLong(since_ns);
    PyObject *lasti = PyLong_FromLong(lasti_i);
    PyObject *entry = since != NULL && lasti != NULL ? PyTuple_New(5) : NULL;
    if (entry == NULL) {
        Py_XDECREF(since);
        Py_XDECREF(lasti);
        return NULL;
    }
    PyTuple_SET_ITEM(entry, 0, Py_NewRef(key));
    PyTuple_SET_ITEM(entry, 1, Py_NewRef(record));
    PyTuple_SET_ITEM(entry, 2, since);
    PyTuple_SET_ITEM(entry, 3, Py_NewRef(code));
    PyTuple_SET_ITEM(entry, 4, lasti);
    return entry;
}

/* `holder` as Python sees it: the hold tuple (built now from pending parts) or None. */
static PyObject *
lock_core_get_holder(PyObject *op, void *closure)
{
    LockCore *self = (LockCore *)op;
    if (self->held_key != NULL) {
        PyObject *entry = hold_tuple(self->held_key, self->held_record, self->held_since,
                                     self->held_code, self->held_lasti);
        if (entry == NULL) {
            return NULL;
        }
        set_holder(self, entry);
    }
    return Py_NewRef(self->holder != NULL ? self->holder : Py_None);
}

static int
lock_core_set_holder(PyObject *op, PyObject *value, void *closure)
{
    set_holder((LockCore *)op, Py_NewRef(value != NULL ? value : Py_None));
    return 0;
}

/* `hist` as Python sees it: the dict with every pending count added. */
static PyObject *
lock_core_get_hist(PyObject *op, void *closure)
{
    LockCore *self = (LockCore *)op;
    if (flush(self) < 0) {
        return NULL;
    }
    return Py_NewRef(self->hist != NULL ? self->hist : Py_None);
}

static int
lock_core_set_hist(PyObject *op, PyObject *value, void *closure)
{
    LockCore *self = (LockCore *)op;
    Py_XSETREF(self->hist, Py_NewRef(value != NULL ? value : Py_None));
    return 0; /* counts still pending are added to the new dict when it is read */
}

static PyGetSetDef lock_core_getset[] = {
    {"holder", lock_core_get_holder, lock_core_set_holder,
     "A lock's holder: (task key, record, since ns, code, lasti), or None.", NULL},
    {"hist", lock_core_get_hist, lock_core_set_hist,
     "Hold-time buckets, and wait-time ones from WAIT_BUCKETS on, or None.", NULL},
    {NULL},
};

static int
lock_core_traverse(PyObject *op, visitproc visit, void *arg)
{
    LockCore *self = (LockCore *)op;
    return visit_fields(OBJECT_FIELDS(LockCore, self, holder, held_code), visit, arg);
}

static int
lock_core_clear(PyObject *op)
{
    LockCore *self = (LockCore *)op;
    clear_fields(OBJECT_FIELDS(LockCore, self, holder, held_code));
    return 0;
}

static void
lock_core_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    lock_core_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject LockCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._lock_speedups.LockCore",
    .tp_doc = "The fields of a primitive's state used on every acquisition.",
    .tp_basicsize = sizeof(LockCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = lock_core_new,
    .tp_traverse = lock_core_traverse,
    .tp_clear = lock_core_clear,
    .tp_dealloc = lock_core_dealloc,
    .tp_members = lock_core_members,
    .tp_getset = lock_core_getset,
};

/* Replace *slot by value (a new reference, stolen). */
static inline void
set_field(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
}

/* *value = the int `obj` (a time in ns); 0, or -1 with an exception set. */
static int
as_ns(PyObject *obj, long long *value)
{
    int overflow = 0;
    /* Not PyLong_AsLongLong: on 3.11 it goes through _PyLong_AsByteArray, ten times
       slower for a multi-digit int. */
    *value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "time in ns out of range");
        return -1;
    }
    return *value == -1 && PyErr_Occurred() ? -1 : 0;
}

/* ---------------------------------------------------------------- LockHooks */

typedef struct {
    PyObject_HEAD
    PyObject *states;    /* SyncTracker.states: id(primitive) -> state */
    PyObject *live;      /* the registry's live records: id(task) -> record */
    PyObject *tasks;     /* asyncio.tasks._current_tasks, or None */
    PyObject *clock;     /* integer-nanosecond clock */
    int fast_clock;      /* `clock` is time.perf_counter_ns: read it here */
    PyObject *threshold; /* held-too-long threshold, ns */
    long long threshold_ns;
    PyObject *slow_task; /* asyncio_task(state) */
    PyObject *hold;      /* SyncTracker.hold(state, key, record, frame) */
    PyObject *unhold;    /* SyncTracker.unhold(state, key) */
    PyObject *long_hold; /* SyncTracker.long_hold(state, entry, duration) */
    PyObject *getframe;  /* sys._getframe */
    PyObject *lock_cls;  /* asyncio.Lock */
    PyObject *acquire;   /* the tracked asyncio.Lock.acquire */
    PyObject *release;   /* the tracked asyncio.Lock.release */
    unsigned int acquire_tag; /* lock_cls's version tag when `acquire` was last ours */
    unsigned int release_tag; /* the same for `release` */
    PyObject *hot;       /* the state last entered or left (a LockCore), or NULL */
    /* The contended path (wait_begin/wait_end); NULL when not given. */
    PyObject *tracker;   /* the SyncTracker (its cancelled_types is read when needed) */
    PyObject *waiting;   /* SyncTracker.waiting: task key -> state it blocks on */
    PyObject *holding_kinds; /* HOLDING_KINDS */
    PyObject *task_cls;  /* asyncio.Task */
    PyObject *site;      /* SyncTracker.site(state, frame) -> (code, lasti) */
    PyObject *add_hold;  /* SyncTracker.add_hold(state, entry) */
    PyObject *blocked;   /* SyncTracker._blocked(hold) */
    PyObject *check_deadlock; /* SyncTracker.check_deadlock(key) */
} LockHooks;

static PyObject *
hooks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"states",   "live",      "tasks",    "clock",   "threshold",
                            "slow_task", "hold",     "unhold",   "long_hold", "getframe",
                            "lock_cls", "acquire",   "release",  "fast_clock", "tracker",
                            "waiting",  "holding_kinds", "task_cls", NULL};
    PyObject *fields[13];
    PyObject *tracker = NULL, *waiting = NULL, *holding_kinds = NULL, *task_cls = NULL;
    int fast_clock = 0;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O!O!OOO!OOOOOO!OO|pOO!O!O!:LockHooks", names, &PyDict_Type,
            &fields[0], &PyDict_Type, &fields[1], &fields[2], &fields[3], &PyLong_Type,
            &fields[4], &fields[5], &fields[6], &fields[7], &fields[8], &fields[9],
            &PyType_Type, &fields[10], &fields[11], &fields[12], &fast_clock, &tracker,
            &PyDict_Type, &waiting, &PyFrozenSet_Type, &holding_kinds, &PyType_Type,
            &task_cls)) {
        return NULL;
    }
    PyObject *site = NULL, *add_hold = NULL, *blocked = NULL, *check_deadlock = NULL;
    if (tracker != NULL) {
        if (waiting == NULL || holding_kinds == NULL || task_cls == NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "tracker needs waiting, holding_kinds and task_cls");
            return NULL;
        }
        site = PyObject_GetAttrString(tracker, "site");
        add_hold = site ? PyObject_GetAttrString(tracker, "add_hold") : NULL;
        blocked = add_hold ? PyObject_GetAttrString(tracker, "_blocked") : NULL;
        check_deadlock = blocked ? PyObject_GetAttrString(tracker, "check_deadlock") : NULL;
        if (check_deadlock == NULL) {
            Py_XDECREF(site);
            Py_XDECREF(add_hold);
            Py_XDECREF(blocked);
            return NULL;
        }
    }
    long long threshold_ns;
    if (as_ns(fields[4], &threshold_ns) < 0) {
        return NULL;
    }
    if (fields[2] != Py_None && !PyDict_Check(fields[2])) {
        PyErr_SetString(PyExc_TypeError, "tasks must be a dict or None");
        return NULL;
    }
    LockHooks *self = (LockHooks *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->states = Py_NewRef(fields[0]);
    self->live = Py_NewRef(fields[1]);
    self->tasks = Py_NewRef(fields[2]);
    self->clock = Py_NewRef(fields[3]);
    self->threshold = Py_NewRef(fields[4]);
    self->threshold_ns = threshold_ns;
#if PY_VERSION_HEX >= 0x030D0000 || defined(CLOCK_IS_MONOTONIC)
    self->fast_clock = fast_clock;
#else
    self->fast_clock = 0;
#endif
    self->slow_task = Py_NewRef(fields[5]);
    self->hold = Py_NewRef(fields[6]);
    self->unhold = Py_NewRef(fields[7]);
    self->long_hold = Py_NewRef(fields[8]);
    self->getframe = Py_NewRef(fields[9]);
    self->lock_cls = Py_NewRef(fields[10]);
    self->acquire = Py_NewRef(fields[11]);
    self->release = Py_NewRef(fields[12]);
    self->acquire_tag = self->release_tag = 0;
    self->hot = NULL;
    self->tracker = Py_XNewRef(tracker);
    self->waiting = Py_XNewRef(waiting);
    self->holding_kinds = Py_XNewRef(holding_kinds);
    self->task_cls = Py_XNewRef(task_cls);
    self->site = site;
    self->add_hold = add_hold;
    self->blocked = blocked;
    self->check_deadlock = check_deadlock;
    return (PyObject *)self;
}

static int
hooks_traverse(PyObject *op, visitproc visit, void *arg)
{
    LockHooks *self = (LockHooks *)op;
    Py_VISIT(self->states);
    Py_VISIT(self->live);
    Py_VISIT(self->tasks);
    Py_VISIT(self->clock);
    Py_VISIT(self->threshold);
    Py_VISIT(self->slow_task);
    Py_VISIT(self->hold);
    Py_VISIT(self->unhold);
    Py_VISIT(self->long_hold);
    Py_VISIT(self->getframe);
    Py_VISIT(self->lock_cls);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->hot);
    Py_VISIT(self->tracker);
    Py_VISIT(self->waiting);
    Py_VISIT(self->holding_kinds);
    Py_VISIT(self->task_cls);
    Py_VISIT(self->site);
    Py_VISIT(self->add_hold);
    Py_VISIT(self->blocked);
    Py_VISIT(self->check_deadlock);
    return 0;
}

static int
hooks_clear(PyObject *op)
{
    LockHooks *self = (LockHooks *)op;
    Py_CLEAR(self->states);
    Py_CLEAR(self->live);
    Py_CLEAR(self->tasks);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->threshold);
    Py_CLEAR(self->slow_task);
    Py_CLEAR(self->hold);
    Py_CLEAR(self->unhold);
    Py_CLEAR(self->long_hold);
    Py_CLEAR(self->getframe);
    Py_CLEAR(self->lock_cls);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->hot);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->holding_kinds);
    Py_CLEAR(self->task_cls);
    Py_CLEAR(self->site);
    Py_CLEAR(self->add_hold);
    Py_CLEAR(self->blocked);
    Py_CLEAR(self->check_deadlock);
    return 0;
}

static void
hooks_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    hooks_clear(op);
    Py_TYPE(op)->tp_free(op);
}

/* Does the weak reference `ref` (or None) point at `obj`? */
static int
refers_to(PyObject *ref, PyObject *obj)
{
    if (ref == NULL || !PyWeakref_Check(ref)) {
        return 0;
    }
    /* Only compared, never used: the referent's address is enough (it is Py_None once
       the referent is gone), and reading it costs no call (PyWeakref_GetRef, 3.13). */
    return ((PyWeakReference *)ref)->wr_object == obj;
}

/* The state of `lock` (a borrowed reference), or NULL: with an exception set on error,
   without one when the lock is not tracked. Remembers it as the hot state. */
static LockCore *
find_state(LockHooks *self, PyObject *lock)
{
    PyObject *hot = self->hot;
    if (hot != NULL && refers_to(((LockCore *)hot)->ref, lock)) {
        return (LockCore *)hot;
    }
    PyObject *key = PyLong_FromVoidPtr(lock);
    if (key == NULL) {
        return NULL;
    }
    PyObject *state = PyDict_GetItemWithError(self->states, key);
    Py_DECREF(key);
    if (state == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(state, &LockCoreType)) {
        PyErr_Format(PyExc_TypeError, "lock state expected, got %R", Py_TYPE(state));
        return NULL;
    }
    Py_XSETREF(self->hot, Py_NewRef(state));
    return (LockCore *)state;
}

/* Call a Python hook with the given arguments; 0, or -1 with an exception set. */
static int
call_hook(PyObject *hook, PyObject *const *args, size_t nargs)
{
    PyObject *result = PyObject_Vectorcall(hook, args, nargs, NULL);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Read the clock in ns into *now; 0, or -1 with an exception set. time.perf_counter_ns
   is read directly, the same readings as calling it: on Linux it is CLOCK_MONOTONIC
   (3.11-3.13), elsewhere PyTime_PerfCounter from 3.13 on (older versions call it). */
static int
read_clock(LockHooks *self, long long *now)
{
    if (self->fast_clock) {
#if defined(CLOCK_IS_MONOTONIC)
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        *now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        return 0;
#elif PY_VERSION_HEX >= 0x030D0000
        PyTime_t t;
        if (PyTime_PerfCounter(&t) < 0) {
            return -1;
        }
        *now = (long long)t;
        return 0;
#endif
    }
    PyObject *value = PyObject_CallNoArgs(self->clock);
    if (value == NULL) {
        return -1;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "the clock returned %R, not an int", Py_TYPE(value));
        Py_DECREF(value);
        return -1;
    }
    int status = as_ns(value, now);
    Py_DECREF(value);
    return status;
}

/* LockHooks.enter(lock): the calling wrapper just took `lock` without waiting. Twin
   of `aenter` in _compat_sync._pure_lock_hooks (and of SyncTracker.hold). */
static PyObject *
hooks_enter(PyObject *op, PyObject *lock)
{
    LockHooks *self = (LockHooks *)op;
    LockCore *state = find_state(self, lock);
    if (state == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(state);
    PyObject *result = NULL, *task = NULL, *key = NULL, *frame = NULL, *code = NULL;
    if (self->tasks != Py_None && state->loop != NULL && state->loop != Py_None) {
        task = PyDict_GetItemWithError(self->tasks, state->loop);
        if (task == NULL && PyErr_Occurred()) {
            goto done;
        }
        Py_XINCREF(task);
    }
    if (task == NULL) {
        task = PyObject_CallOneArg(self->slow_task, (PyObject *)state);
        if (task == NULL) {
            goto done;
        }
    }
    key = PyLong_FromVoidPtr(task);
    if (key == NULL) {
        goto done;
    }
    /* Called from the wrapper's frame: one up is the user's (or asyncio's mixin). */
    PyObject *depth = one;
    frame = PyObject_Vectorcall(self->getframe, &depth, 1, NULL);
    if (frame == NULL) {
        goto done;
    }
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "sys._getframe returned a non-frame");
        goto done;
    }
    PyObject *record = PyDict_GetItemWithError(self->live, key);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
        record = Py_None;
    }
    Py_INCREF(record);
    code = (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
    if (code == state->site_code) {
        long long now;
        if (read_clock(self, &now) < 0) {
            Py_DECREF(record);
            goto done;
        }
        set_holder(state, NULL);
        state->held_key = Py_NewRef(key);
        state->held_record = record;
        state->held_code = Py_NewRef(code);
        state->held_since = now;
        state->held_lasti = PyFrame_GetLasti((PyFrameObject *)frame);
    }
    else {
        /* A new site: the slow path finds the user's frame. The lock was free, so a
           holder left over is stale. */
        set_holder(state, Py_NewRef(Py_None));
        PyObject *args[] = {(PyObject *)state, key, record, frame};
        int failed = call_hook(self->hold, args, 4);
        Py_DECREF(record);
        if (failed) {
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(code);
    Py_XDECREF(frame);
    Py_XDECREF(key);
    Py_XDECREF(task);
    Py_DECREF(state);
    return result;
}

/* int.bit_length() of `value`. */
static inline long
bit_length(long long value)
{
    unsigned long long magnitude =
        value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
#if defined(__GNUC__) || defined(__clang__)
    return magnitude ? 64 - __builtin_clzll(magnitude) : 0;
#else
    long bits = 0;
    while (magnitude) {
        bits++;
        magnitude >>= 1;
    }
    return bits;
#endif
}

/* *diff = a - b; nonzero when it overflows. */
static inline int
subtract(long long a, long long b, long long *diff)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_sub_overflow(a, b, diff);
#else
    if ((b > 0 && a < LLONG_MIN + b) || (b < 0 && a > LLONG_MAX + b)) {
        return 1;
    }
    *diff = a - b;
    return 0;
#endif
}

/* LockHooks.exit(lock): the calling wrapper just released `lock`. Twin of `aexit` in
   _compat_sync._pure_lock_hooks (and of SyncTracker.held). */
static PyObject *
hooks_exit(PyObject *op, PyObject *lock)
{
    LockHooks *self = (LockHooks *)op;
    LockCore *state = find_state(self, lock);
    if (state == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(state);
    PyObject *result = NULL, *entry = NULL, *duration = NULL;
    PyObject *key = NULL, *record = NULL, *code = NULL;
    long long since;
    int lasti = 0;
    if (state->held_key != NULL) {
        /* Python never saw this hold: its tuple is built only if a hook needs it. */
        key = state->held_key;
        record = state->held_record;
        code = state->held_code;
        since = state->held_since;
        lasti = state->held_lasti;
        state->held_key = state->held_record = state->held_code = NULL;
        set_holder(state, Py_NewRef(Py_None));
    }
    else if (state->holder == NULL || state->holder == Py_None) {
        /* No single holder: a semaphore-style hold list, if any. */
        PyObject *holds = PyObject_GetAttr((PyObject *)state, str_holds);
        if (holds == NULL) {
            goto done;
        }
        int truth = PyObject_IsTrue(holds);
        Py_DECREF(holds);
        if (truth < 0) {
            goto done;
        }
        if (truth) {
            PyObject *args[] = {(PyObject *)state, zero};
            if (call_hook(self->unhold, args, 2) < 0) {
                goto done;
            }
        }
        result = Py_NewRef(Py_None);
        goto done;
    }
    else {
        if (!PyTuple_Check(state->holder) || PyTuple_GET_SIZE(state->holder) != 5) {
            PyErr_Format(PyExc_TypeError, "hold entry expected, got %R", state->holder);
            goto done;
        }
        entry = Py_NewRef(state->holder);
        set_holder(state, Py_NewRef(Py_None));
        if (as_ns(PyTuple_GET_ITEM(entry, 2), &since) < 0) {
            goto done;
        }
    }
    long long now, held;
    if (read_clock(self, &now) < 0) {
        goto done;
    }
    if (subtract(now, since, &held)) {
        PyErr_SetString(PyExc_OverflowError, "hold time out of range");
        goto done;
    }
    long long longest;
    if (state->hold_max == NULL) {
        PyErr_SetString(PyExc_AttributeError, "hold_max");
        goto done;
    }
    if (as_ns(state->hold_max, &longest) < 0) {
        goto done;
    }
    if (held > longest) {
        duration = PyLong_FromLongLong(held);
        if (duration == NULL) {
            goto done;
        }
        set_field(&state->hold_max, Py_NewRef(duration));
    }
    if (count_hold(state, (int)bit_length(held)) < 0) {
        goto done;
    }
    if (held >= self->threshold_ns) {
        if (duration == NULL && (duration = PyLong_FromLongLong(held)) == NULL) {
            goto done;
        }
        if (entry == NULL) {
            entry = hold_tuple(key, record, since, code, lasti);
            if (entry == NULL) {
                goto done;
            }
        }
        PyObject *args[] = {(PyObject *)state, entry, duration};
        if (call_hook(self->long_hold, args, 3) < 0) {
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(duration);
    Py_XDECREF(entry);
    Py_XDECREF(key);
    Py_XDECREF(record);
    Py_XDECREF(code);
    Py_DECREF(state);
    return result;
}

/* Is `cls.name` still `expected` (`cls.name is expected` in Python)? 1 or 0 (also when
   it is gone), or -1 with an exception set. */
static int
still_ours(PyObject *cls, PyObject *name, PyObject *expected)
{
    PyObject *dict = ((PyTypeObject *)cls)->tp_dict;
    if (dict != NULL) {
        PyObject *found = PyDict_GetItemWithError(dict, name);
        if (found != NULL) {
            return found == expected;
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    PyObject *found = PyObject_GetAttr(cls, name); /* inherited, or gone */
    if (found == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    Py_DECREF(found);
    return found == expected;
}

/* still_ours(), answered from the class's version tag when it has not changed since
   the last check that said yes: the interpreter gives a class a new, never reused tag
   whenever it (or a base) is modified, which is what invalidates its method caches. */
static int
still_ours_cached(LockHooks *self, PyObject *name, PyObject *expected, unsigned int *tag)
{
    PyTypeObject *cls = (PyTypeObject *)self->lock_cls;
    unsigned int now =
        PyType_HasFeature(cls, Py_TPFLAGS_VALID_VERSION_TAG) ? cls->tp_version_tag : 0;
    if (now != 0 && now == *tag) {
        return 1;
    }
    int ours = still_ours(self->lock_cls, name, expected);
    *tag = ours == 1 ? now : 0;
    return ours;
}

/* LockHooks.aenter(lock): `async with` is about to take `lock` without waiting. */
static PyObject *
hooks_aenter(PyObject *op, PyObject *lock)
{
    LockHooks *self = (LockHooks *)op;
    int ours = still_ours_cached(self, str_acquire, self->acquire, &self->acquire_tag);
    if (ours <= 0) {
        return ours < 0 ? NULL : Py_NewRef(Py_False);
    }
    PyObject *done = hooks_enter(op, lock);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    return Py_NewRef(Py_True);
}

/* LockHooks.aexit(lock): `async with` is about to release `lock`. */
static PyObject *
hooks_aexit(PyObject *op, PyObject *lock)
{
    LockHooks *self = (LockHooks *)op;
    int ours = still_ours_cached(self, str_release, self->release, &self->release_tag);
    if (ours <= 0) {
        return ours < 0 ? NULL : Py_NewRef(Py_False);
    }
    PyObject *done = hooks_exit(op, lock);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    return Py_NewRef(Py_True);
}

/* ---------------------------------------------------------------- contended path */

/* The key (id) of the running task, a new reference, or NULL with an exception set.
   The same lookup as hooks_enter: the task of the loop cached on the state. */
static PyObject *
current_key(LockHooks *self, LockCore *state)
{
    PyObject *task = NULL;
    if (self->tasks != Py_None && state->loop != NULL && state->loop != Py_None) {
        task = PyDict_GetItemWithError(self->tasks, state->loop);
        if (task == NULL && PyErr_Occurred()) {
            return NULL;
        }
        Py_XINCREF(task);
    }
    if (task == NULL) {
        task = PyObject_CallOneArg(self->slow_task, (PyObject *)state);
        if (task == NULL) {
            return NULL;
        }
    }
    PyObject *key = PyLong_FromVoidPtr(task);
    Py_DECREF(task);
    return key;
}

/* Is the holder `key` (whose record is `record`) blocked on a primitive or awaiting a
   task? 1 or 0, or -1 with an exception set. Twin of SyncTracker._blocked. */
static int
holder_blocked(LockHooks *self, PyObject *key, PyObject *record)
{
    int found = PyDict_Contains(self->waiting, key);
    if (found != 0 || record == Py_None) {
        return found;
    }
    PyObject *ref = PyObject_GetAttr(record, str_ref);
    if (ref == NULL) {
        return -1;
    }
    if (ref == Py_None) {
        Py_DECREF(ref);
        return 0;
    }
    PyObject *task = PyObject_CallNoArgs(ref);
    Py_DECREF(ref);
    if (task == NULL) {
        return -1;
    }
    if (task == Py_None) {
        Py_DECREF(task);
        return 0;
    }
    /* asyncio_awaited_task: getattr(task, "_fut_waiter", None), an asyncio.Task. */
    PyObject *waiter = PyObject_GetAttr(task, str_fut_waiter);
    Py_DECREF(task);
    if (waiter == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    int result = PyObject_IsInstance(waiter, self->task_cls);
    Py_DECREF(waiter);
    return result;
}

/* Can a holder of `state` close a cycle (it is itself blocked)? 1 or 0, or -1 with an
   exception set. */
static int
holders_blocked(LockHooks *self, LockCore *state)
{
    int blocked = 0;
    if (state->held_key != NULL) {
        blocked = holder_blocked(self, state->held_key, state->held_record);
    }
    else if (state->holder != NULL && state->holder != Py_None) {
        PyObject *holder = Py_NewRef(state->holder);
        if (PyTuple_Check(holder) && PyTuple_GET_SIZE(holder) == 5) {
            blocked = holder_blocked(self, PyTuple_GET_ITEM(holder, 0),
                                     PyTuple_GET_ITEM(holder, 1));
        }
        else {
            PyObject *answer = PyObject_CallOneArg(self->blocked, holder);
            blocked = answer == NULL ? -1 : PyObject_IsTrue(answer);
            Py_XDECREF(answer);
        }
        Py_DECREF(holder);
    }
    if (blocked != 0 || state->holds == NULL || state->holds == Py_None) {
        return blocked;
    }
    /* Other holds (not an asyncio.Lock's): rare, left to SyncTracker._blocked. */
    PyObject *holds = PySequence_List(state->holds);
    if (holds == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(holds) && blocked == 0; i++) {
        PyObject *answer = PyObject_CallOneArg(self->blocked, PyList_GET_ITEM(holds, i));
        blocked = answer == NULL ? -1 : PyObject_IsTrue(answer);
        Py_XDECREF(answer);
    }
    Py_DECREF(holds);
    return blocked;
}

/* The state of `lock` for the contended path (borrowed), or NULL: with an exception
   set on error, without one when the lock is not tracked. */
static LockCore *
wait_state(PyObject *self_op, PyObject *lock)
{
    if (((LockHooks *)self_op)->tracker == NULL) {
        PyErr_SetString(PyExc_TypeError, "LockHooks made without a tracker");
        return NULL;
    }
    return find_state((LockHooks *)self_op, lock);
}

/* LockHooks.wait_begin(lock): the calling wrapper's task is about to block acquiring
   `lock` (at the wrapper's caller's line). Registers the waiter (and the wait-for
   edge), walks the wait-for graph when a holder is itself blocked, and returns the
   token for wait_end (the task's key), or None when `lock` is not tracked. Twin of SyncTracker.wait_begin with
   operation "acquire"; the pure-Python twin is `wait_begin` in
   _compat_sync._pure_lock_hooks. */
static PyObject *
hooks_wait_begin(PyObject *op, PyObject *arg)
{
    LockHooks *self = (LockHooks *)op;
    LockCore *state = wait_state(op, arg);
    if (state == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(state);
    PyObject *result = NULL, *key = NULL, *record = NULL, *frame = NULL, *code = NULL;
    PyObject *since = NULL, *lasti_obj = NULL, *entry = NULL;
    key = current_key(self, state);
    if (key == NULL) {
        goto done;
    }
    record = PyDict_GetItemWithError(self->live, key);
    if (record == NULL && PyErr_Occurred()) {
        goto done;
    }
    record = Py_NewRef(record != NULL ? record : Py_None);
    PyObject *depth = one;
    frame = PyObject_Vectorcall(self->getframe, &depth, 1, NULL);
    if (frame == NULL) {
        goto done;
    }
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "sys._getframe returned a non-frame");
        goto done;
    }
    code = (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
    if (code == state->site_code) {
        lasti_obj = PyLong_FromLong(PyFrame_GetLasti((PyFrameObject *)frame));
    }
    else {
        /* A new site: the slow path finds the user's frame (and remembers it). */
        PyObject *args[] = {(PyObject *)state, frame};
        PyObject *site = PyObject_Vectorcall(self->site, args, 2, NULL);
        if (site == NULL) {
            goto done;
        }
        if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) != 2) {
            PyErr_Format(PyExc_TypeError, "site() returned %R", site);
            Py_DECREF(site);
            goto done;
        }
        Py_SETREF(code, Py_NewRef(PyTuple_GET_ITEM(site, 0)));
        lasti_obj = Py_NewRef(PyTuple_GET_ITEM(site, 1));
        Py_DECREF(site);
    }
    if (lasti_obj == NULL) {
        goto done;
    }
    long long now;
    if (read_clock(self, &now) < 0 || (since = PyLong_FromLongLong(now)) == NULL) {
        goto done;
    }
    if (state->waits == NULL || state->waits == Py_None) {
        PyObject *waits = PyDict_New();
        if (waits == NULL) {
            goto done;
        }
        Py_XSETREF(state->waits, waits);
    }
    else if (!PyDict_Check(state->waits)) {
        PyErr_SetString(PyExc_TypeError, "waits is not a dict");
        goto done;
    }
    entry = PyTuple_Pack(5, record, since, code, lasti_obj, str_acquire);
    if (entry == NULL) {
        goto done;
    }
    PyObject *waits = Py_NewRef(state->waits);
    int status = PyDict_SetItem(waits, key, entry);
    Py_DECREF(waits);
    if (status < 0) {
        goto done;
    }
    int holding = state->kind == NULL ? 0 : PySet_Contains(self->holding_kinds, state->kind);
    if (holding < 0) {
        goto done;
    }
    if (holding) {
        if (PyDict_SetItem(self->waiting, key, (PyObject *)state) < 0) {
            goto done;
        }
        /* Only a holder that is itself blocked, or awaits a task, can close a cycle:
           check that cheaply before walking the graph (in Python: it is rare). */
        int blocked = holders_blocked(self, state);
        if (blocked < 0) {
            goto done;
        }
        if (blocked && call_hook(self->check_deadlock, &key, 1) < 0) {
            goto done;
        }
    }
    result = Py_NewRef(key);
done:
    Py_XDECREF(entry);
    Py_XDECREF(since);
    Py_XDECREF(lasti_obj);
    Py_XDECREF(code);
    Py_XDECREF(frame);
    Py_XDECREF(record);
    Py_XDECREF(key);
    Py_DECREF(state);
    return result;
}

/* LockHooks.wait_end(lock, token, exc): the wait wait_begin returned `token` for
   ended: acquired (`exc` None: the task now holds the lock), or raised `exc`
   (cancelled or timed out when it is one of the tracker's cancelled_types). Twin of
   SyncTracker.wait_end. */
static PyObject *
hooks_wait_end(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    LockHooks *self = (LockHooks *)op;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait_end(lock, token, exc)");
        return NULL;
    }
    LockCore *state = wait_state(op, args[0]);
    if (state == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    PyObject *key = args[1], *exc = args[2];
    Py_INCREF(state);
    PyObject *result = NULL, *entry = NULL;
    long long now;
    if (read_clock(self, &now) < 0) {
        goto done;
    }
    if (state->waits != NULL && state->waits != Py_None) {
        PyObject *waits = Py_NewRef(state->waits);
        if (!PyDict_Check(waits)) {
            PyErr_SetString(PyExc_TypeError, "waits is not a dict");
            Py_DECREF(waits);
            goto done;
        }
        entry = Py_XNewRef(PyDict_GetItemWithError(waits, key));
        int status = entry == NULL ? (PyErr_Occurred() ? -1 : 0) : PyDict_DelItem(waits, key);
        if (status == 0 && PyDict_GET_SIZE(waits) == 0 && state->waits == waits) {
            Py_SETREF(state->waits, Py_NewRef(Py_None));
        }
        Py_DECREF(waits);
        if (status < 0) {
            goto done;
        }
    }
    PyObject *edge = PyDict_GetItemWithError(self->waiting, key);
    if (edge == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (edge == (PyObject *)state && PyDict_DelItem(self->waiting, key) < 0) {
        goto done;
    }
    if (entry != NULL && (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5)) {
        PyErr_Format(PyExc_TypeError, "wait entry expected, got %R", entry);
        goto done;
    }
    if (entry != NULL) {
        /* (An entry is missing only if something else removed it: then neither its
           start nor its site is known, and the hold below starts now, at no site.) */
        long long since, waited, longest;
        if (as_ns(PyTuple_GET_ITEM(entry, 1), &since) < 0) {
            goto done;
        }
        if (subtract(now, since, &waited)) {
            PyErr_SetString(PyExc_OverflowError, "wait time out of range");
            goto done;
        }
        if (state->wait_max == NULL || as_ns(state->wait_max, &longest) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_AttributeError, "wait_max");
            }
            goto done;
        }
        if (waited > longest) {
            PyObject *value = PyLong_FromLongLong(waited);
            if (value == NULL) {
                goto done;
            }
            set_field(&state->wait_max, value);
        }
        if (count_hold(state, (int)(WAIT_BUCKETS + bit_length(waited))) < 0) {
            goto done;
        }
    }
    if (exc != Py_None) {
        PyObject *types = PyObject_GetAttr(self->tracker, str_cancelled_types);
        if (types == NULL) {
            goto done;
        }
        int cancelled = PyObject_IsInstance(exc, types);
        Py_DECREF(types);
        if (cancelled < 0) {
            goto done;
        }
        if (cancelled) {
            if (state->cancelled_waits == NULL) {
                PyErr_SetString(PyExc_AttributeError, "cancelled_waits");
                goto done;
            }
            PyObject *value = PyNumber_Add(state->cancelled_waits, one);
            if (value == NULL) {
                goto done;
            }
            set_field(&state->cancelled_waits, value);
        }
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* Acquired: now held by `key` (SyncTracker.add_hold), at the wait's site. */
    PyObject *record = entry != NULL ? PyTuple_GET_ITEM(entry, 0) : Py_None;
    PyObject *code = entry != NULL ? PyTuple_GET_ITEM(entry, 2) : Py_None;
    long lasti = 0;
    if (entry != NULL) {
        lasti = PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
        if (lasti == -1 && PyErr_Occurred()) {
            goto done;
        }
    }
    int single = state->held_key == NULL &&
                 (state->holder == NULL || state->holder == Py_None) && state->kind != NULL;
    if (single) {
        single = state->kind == str_lock ? 1
                                         : PyObject_RichCompareBool(state->kind, str_lock, Py_EQ);
        if (single < 0) {
            goto done;
        }
    }
    if (single && lasti >= INT_MIN && lasti <= INT_MAX) {
        set_holder(state, NULL);
        state->held_key = Py_NewRef(key);
        state->held_record = Py_NewRef(record);
        state->held_code = Py_NewRef(code);
        state->held_since = now;
        state->held_lasti = (int)lasti;
    }
    else {
        PyObject *hold = hold_tuple(key, record, now, code, (int)lasti);
        if (hold == NULL) {
            goto done;
        }
        PyObject *call_args[] = {(PyObject *)state, hold};
        int failed = call_hook(self->add_hold, call_args, 2);
        Py_DECREF(hold);
        if (failed) {
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(entry);
    Py_DECREF(state);
    return result;
}

static PyMethodDef hooks_methods[] = {
    {"enter", hooks_enter, METH_O,
     "Record that the running task took `lock` without waiting (at the caller's line)."},
    {"exit", hooks_exit, METH_O, "Record that `lock` was released (its hold time)."},
    {"aenter", hooks_aenter, METH_O,
     "False when the class's acquire was replaced since; else enter(lock) and True."},
    {"aexit", hooks_aexit, METH_O,
     "False when the class's release was replaced since; else exit(lock) and True."},
    {"wait_begin", hooks_wait_begin, METH_O,
     "The running task starts blocking on `lock`: a token for wait_end (None: untracked)."},
    {"wait_end", (PyCFunction)(void (*)(void))hooks_wait_end, METH_FASTCALL,
     "wait_end(lock, token, exc): the wait ended (acquired when exc is None)."},
    {NULL},
};

static PyTypeObject LockHooksType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._lock_speedups.LockHooks",
    .tp_doc = "The bookkeeping of uncontended asyncio.Lock acquisitions and releases.",
    .tp_basicsize = sizeof(LockHooks),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = hooks_new,
    .tp_traverse = hooks_traverse,
    .tp_clear = hooks_clear,
    .tp_dealloc = hooks_dealloc,
    .tp_methods = hooks_methods,
};

/* ---------------------------------------------------------------- module */

static struct PyModuleDef lock_speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskscope._core._lock_speedups",
    .m_doc = "The lock monitor's uncontended asyncio.Lock path in C (see _compat_sync.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__lock_speedups(void)
{
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    static const InternedName names[] = {
        {&str_holds, "holds"},
        {&str_acquire, "acquire"},
        {&str_release, "release"},
        {&str_ref, "ref"},
        {&str_fut_waiter, "_fut_waiter"},
        {&str_cancelled_types, "cancelled_types"},
        {&str_lock, "lock"},
    };
    if (zero == NULL || one == NULL ||
        intern_names(names, sizeof(names) / sizeof(names[0])) < 0 ||
        PyType_Ready(&LockCoreType) < 0 || PyType_Ready(&LockHooksType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&lock_speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "LockCore", (PyObject *)&LockCoreType) < 0 ||
        PyModule_AddObjectRef(module, "LockHooks", (PyObject *)&LockHooksType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
