/* taskscope's hot path in C: the fields of a task record written on every step
 * (RecordCore, TaskRecord's base class), and the asyncio backend's call_soon wrapper and
 * step trampoline. Pure-Python twins: taskscope/_core/_accel.py (PureRecordCore) and
 * taskscope/_backends/_asyncio.py, used when this module is not built or
 * TASKSCOPE_PURE_PYTHON is set (taskscope/_core/_accel.py decides, once).
 *
 * Why: every step of every task passes through the wrapper and the trampoline. In
 * Python they cost ~10,000 CPU instructions per step (two frames, repacking of
 * positional and keyword arguments, a dozen attribute reads and writes); here the
 * record's fields are read and written by offset. Everything rare (discovering a new
 * task, cancellation provenance, a task's end, instruments, internal errors) calls back
 * into the Python functions given at construction, so there is one implementation of
 * each.
 *
 * Only the public C API is used (CPython 3.11-3.13), except for the walk from the
 * running frame to the line that created a task, which reads the interpreter's frame
 * records (_cframes.h says why, and falls back to the public API). Nothing here ever raises
 * into the event loop on its own account: a failure of taskscope's accounting is
 * handed to `on_error` (taskscope._core._faults.internal_error) and the step or the
 * call_soon goes on exactly as without taskscope.
 */
#include "_cshared.h"
#include "_cframes.h"
#include "_cmethods.h"
#include <structmember.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- RecordCore */

/* The fields of a task record written for every task and on every step (TaskRecord's
   base class; the pure-Python twin is taskscope._core._accel.PureRecordCore). Read and
   written here by offset; Python code sees them as ordinary attributes. */
typedef struct {
    PyObject_HEAD
    /* written on every step */
    double busy;
    double scheduled;
    double scheduled_at;
    double step_start;
    double longest_step;
    Py_ssize_t steps;
    Py_ssize_t waited_at;
    PyObject *first_step; /* None or a float */
    /* written once per task (new_record, task_finished) */
    Py_ssize_t id;
    double created;
    int state;
    PyObject *code;            /* the coroutine's code object, or None */
    PyObject *created_at;      /* (code, line) or None */
    PyObject *parent_id;       /* int or None */
    PyObject *owner_key;       /* id() of the task: the registry key */
    PyObject *ref;             /* weakref to the task, or None */
    PyObject *site;            /* SiteAggregate or None */
    PyObject *name;            /* str */
    PyObject *longest_step_at; /* (code, line) or None */
    PyObject *ended;           /* None or a float */
    PyObject *cancel_cause;    /* None or str; read at every wakeup */
} RecordCore;

#define RECORD_OBJECT(field, doc)                                                          \
    {                                                                                      \
        #field, T_OBJECT, offsetof(RecordCore, field), 0, doc                              \
    }

static PyMemberDef record_core_members[] = {
    {"busy", T_DOUBLE, offsetof(RecordCore, busy), 0, "Seconds spent running steps."},
    {"scheduled", T_DOUBLE, offsetof(RecordCore, scheduled), 0,
     "Seconds spent ready but waiting for the loop."},
    {"scheduled_at", T_DOUBLE, offsetof(RecordCore, scheduled_at), 0,
     "Clock reading when last made ready; 0.0 once it runs."},
    {"step_start", T_DOUBLE, offsetof(RecordCore, step_start), 0,
     "Clock reading when the current step began; 0.0 between steps."},
    {"longest_step", T_DOUBLE, offsetof(RecordCore, longest_step), 0, "Longest step, seconds."},
    {"steps", T_PYSSIZET, offsetof(RecordCore, steps), 0, "Steps run."},
    {"waited_at", T_PYSSIZET, offsetof(RecordCore, waited_at), 0,
     "`steps` when last woken by what it waited for."},
    RECORD_OBJECT(first_step, "Clock reading of the first step, or None."),
    {"id", T_PYSSIZET, offsetof(RecordCore, id), 0, "The record's id (1, 2, ...)."},
    {"created", T_DOUBLE, offsetof(RecordCore, created), 0, "Clock reading at creation."},
    {"state", T_INT, offsetof(RecordCore, state), 0, "PENDING, COMPLETED, FAILED, CANCELLED."},
    RECORD_OBJECT(code, "The coroutine's code object, or None."),
    RECORD_OBJECT(created_at, "(code, line) of the creating user frame, or None."),
    RECORD_OBJECT(parent_id, "The parent task's record id, or None."),
    RECORD_OBJECT(owner_key, "id() of the task object: the registry key."),
    RECORD_OBJECT(ref, "Weak reference to the task, or None."),
    RECORD_OBJECT(site, "The creation site's aggregate."),
    RECORD_OBJECT(name, "The task's name, as last read."),
    RECORD_OBJECT(longest_step_at, "(code, line) suspended at after the longest step."),
    RECORD_OBJECT(ended, "Clock reading at the end, or None."),
    RECORD_OBJECT(cancel_cause, "Why the task was cancelled, once known, or None."),
    {NULL},
};

static PyObject *empty_str;

static PyObject *
record_core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    RecordCore *self = (RecordCore *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->first_step = Py_NewRef(Py_None);
        self->code = Py_NewRef(Py_None);
        self->created_at = Py_NewRef(Py_None);
        self->parent_id = Py_NewRef(Py_None);
        self->owner_key = Py_NewRef(Py_None);
        self->ref = Py_NewRef(Py_None);
        self->site = Py_NewRef(Py_None);
        self->name = Py_NewRef(empty_str);
        self->longest_step_at = Py_NewRef(Py_None);
        self->ended = Py_NewRef(Py_None);
        self->cancel_cause = Py_NewRef(Py_None);
    }
    return (PyObject *)self;
}

static int
record_core_traverse(PyObject *op, visitproc visit, void *arg)
{
    RecordCore *self = (RecordCore *)op;
    Py_VISIT(self->first_step);
    Py_VISIT(self->code);
    Py_VISIT(self->created_at);
    Py_VISIT(self->parent_id);
    Py_VISIT(self->owner_key);
    Py_VISIT(self->ref);
    Py_VISIT(self->site);
    Py_VISIT(self->name);
    Py_VISIT(self->longest_step_at);
    Py_VISIT(self->ended);
    Py_VISIT(self->cancel_cause);
    return 0;
}

static int
record_core_clear(PyObject *op)
{
    RecordCore *self = (RecordCore *)op;
    Py_CLEAR(self->first_step);
    Py_CLEAR(self->code);
    Py_CLEAR(self->created_at);
    Py_CLEAR(self->parent_id);
    Py_CLEAR(self->owner_key);
    Py_CLEAR(self->ref);
    Py_CLEAR(self->site);
    Py_CLEAR(self->name);
    Py_CLEAR(self->longest_step_at);
    Py_CLEAR(self->ended);
    Py_CLEAR(self->cancel_cause);
    return 0;
}

static void
record_core_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    record_core_clear(op);
    Py_TYPE(op)->tp_free(op);
}

/* GC support: a record refers to its weakref, whose callback is the registry's, which
   holds the live records; the collector must see those edges. */
static PyTypeObject RecordCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.RecordCore",
    .tp_doc = "The per-task and per-step fields of a task record.",
    .tp_basicsize = sizeof(RecordCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = record_core_new,
    .tp_traverse = record_core_traverse,
    .tp_clear = record_core_clear,
    .tp_dealloc = record_core_dealloc,
    .tp_members = record_core_members,
};

/* ---------------------------------------------------------------- SiteCore */

/* The running totals of one creation site (SiteAggregate's base class; the pure-Python
   twin is taskscope._core._accel.PureSiteCore), updated here by offset for every task. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t created;
    Py_ssize_t completed;
    Py_ssize_t failed;
    Py_ssize_t cancelled;
    Py_ssize_t alive;
    double busy;
    double wall;
    double longest_step;
    PyObject *raw;  /* (code, line) every task of the site shares, or None */
    PyObject *code; /* the coroutine code of its first task, or None */
} SiteCore;

static PyMemberDef site_core_members[] = {
    {"created", T_PYSSIZET, offsetof(SiteCore, created), 0, "Tasks created here."},
    {"completed", T_PYSSIZET, offsetof(SiteCore, completed), 0, "Tasks that completed."},
    {"failed", T_PYSSIZET, offsetof(SiteCore, failed), 0, "Tasks that failed."},
    {"cancelled", T_PYSSIZET, offsetof(SiteCore, cancelled), 0, "Tasks cancelled."},
    {"alive", T_PYSSIZET, offsetof(SiteCore, alive), 0, "Tasks still alive."},
    {"busy", T_DOUBLE, offsetof(SiteCore, busy), 0, "Busy seconds of finished tasks."},
    {"wall", T_DOUBLE, offsetof(SiteCore, wall), 0, "Lifetime seconds of finished tasks."},
    {"longest_step", T_DOUBLE, offsetof(SiteCore, longest_step), 0, "Longest step, seconds."},
    {"raw", T_OBJECT, offsetof(SiteCore, raw), 0, "(code, line) of the site, or None."},
    {"code", T_OBJECT, offsetof(SiteCore, code), 0, "The tasks' coroutine code, or None."},
    {NULL},
};

static PyObject *
site_core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    SiteCore *self = (SiteCore *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->raw = Py_NewRef(Py_None);
        self->code = Py_NewRef(Py_None);
    }
    return (PyObject *)self;
}

static int
site_core_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((SiteCore *)op)->raw);
    Py_VISIT(((SiteCore *)op)->code);
    return 0;
}

static int
site_core_clear(PyObject *op)
{
    Py_CLEAR(((SiteCore *)op)->raw);
    Py_CLEAR(((SiteCore *)op)->code);
    return 0;
}

static void
site_core_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    site_core_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject SiteCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.SiteCore",
    .tp_doc = "The running totals of one creation site.",
    .tp_basicsize = sizeof(SiteCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = site_core_new,
    .tp_traverse = site_core_traverse,
    .tp_clear = site_core_clear,
    .tp_dealloc = site_core_dealloc,
    .tp_members = site_core_members,
};

/* The record as a RecordCore, or NULL with TypeError set. */
static RecordCore *
as_core(PyObject *record)
{
    if (!PyObject_TypeCheck(record, &RecordCoreType)) {
        PyErr_Format(PyExc_TypeError, "task record expected, got %R", Py_TYPE(record));
        return NULL;
    }
    return (RecordCore *)record;
}

/* Interned attribute and hook names, created once at module import. */
static PyObject *str_cr_frame, *str_gi_frame, *str_cr_await, *str_gi_yieldfrom;
static PyObject *str_name, *str_self, *str_cancelled, *str_done,
    *str_get_coro, *str_id, *str_call, *str_before, *str_after, *str_created, *msg_call_soon,
    *msg_step;

/* time.perf_counter, when it reads CLOCK_MONOTONIC (checked at import): read_clock then
   reads that clock itself, the same value without a call into Python (~150
   instructions, several times per task). */
static PyObject *perf_counter;
#if defined(CLOCK_MONOTONIC)
#define HAVE_DIRECT_CLOCK 1
static int direct_perf_counter;
#endif

/* Call the clock; -1.0 with an exception set on failure. */
static double
read_clock(PyObject *clock)
{
#ifdef HAVE_DIRECT_CLOCK
    if (clock == perf_counter && direct_perf_counter) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            /* As CPython converts nanoseconds to float seconds (_PyTime_AsSecondsDouble). */
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            if (ns % 1000000000LL == 0) {
                return (double)(ns / 1000000000LL);
            }
            return (double)ns / 1e9;
        }
    }
#endif
    PyObject *now = PyObject_CallNoArgs(clock);
    if (now == NULL) {
        return -1.0;
    }
    double value = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return value;
}

/* instruments.call(hook, record.id, *extra) when an instrument implements `hook`. */
static int
call_hook(PyObject *instruments, PyObject *hook, PyObject *record, PyObject *extra)
{
    if (PyDict_GET_SIZE(instruments) == 0) { /* no instruments: the common case */
        return 0;
    }
    int present = PyDict_Contains(instruments, hook);
    if (present <= 0) {
        return present;
    }
    PyObject *record_id = PyObject_GetAttr(record, str_id);
    if (record_id == NULL) {
        return -1;
    }
    PyObject *result = PyObject_CallMethodObjArgs(instruments, str_call, hook, record_id, extra,
                                                  NULL);
    Py_DECREF(record_id);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* ---------------------------------------------------------------- code caches */

/* Frame kinds: the values of AsyncioBackend._frame_kinds (keep in sync with
   _asyncio.py: _USER, _LIBRARY, _DISPATCH, _ENTRY). */
enum { KIND_USER = 0, KIND_LIBRARY = 1, KIND_DISPATCH = 2, KIND_ENTRY = 3 };
#define MAX_WALK 64
/* site_key_of in _registry.py: address | line << 48 */
#define ADDRESS_SPAN ((unsigned long long)1 << 48)
#define LINE_SHIFT 48
#define LINE_SPAN (1 << 15)

/* Small direct-mapped caches in front of the dict lookups the recorder makes for every
   task. Keys are code objects that cannot die while cached: a code's kind is cached
   only when it is in frame_kinds, which keeps every code it holds alive (_asyncio.py:
   _kind_codes), and a line is cached only for such a code. */
#define KIND_SLOTS 256
#define LINE_SLOTS 256

typedef struct {
    PyObject *code;
    long kind;
} KindSlot;

typedef struct {
    PyObject *code;
    int lasti;
    int line;
} LineSlot;

static inline size_t
slot_of(const void *pointer, size_t salt, size_t slots)
{
    return (((uintptr_t)pointer >> 4) ^ salt) & (slots - 1);
}

/* The frame kind of a code object, or -1 when unknown (or on error, set). */
static long
frame_kind(PyObject *kinds, KindSlot *cache, PyObject *code)
{
    KindSlot *slot = &cache[slot_of(code, 0, KIND_SLOTS)];
    if (slot->code == code) {
        return slot->kind;
    }
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        return -1;
    }
    PyObject *kind = PyDict_GetItemWithError(kinds, key); /* borrowed */
    Py_DECREF(key);
    if (kind == NULL) {
        return -1;
    }
    long value = PyLong_AsLong(kind);
    if (value >= 0) {
        slot->code = code;
        slot->kind = value;
    }
    return value;
}

/* The slot of a line cache for position `lasti` in `code`: it holds that position's
   line when its code and lasti match (computing a line scans the line table). */
static inline LineSlot *
line_slot(LineSlot *cache, PyObject *code, int lasti)
{
    return &cache[slot_of(code, (size_t)lasti, LINE_SLOTS)];
}

static inline int
remember_line(LineSlot *slot, PyObject *code, int lasti, int line)
{
    slot->code = code;
    slot->lasti = lasti;
    slot->line = line;
    return line;
}

/* The line a frame of a code in frame_kinds is at. */
static int
frame_line(LineSlot *cache, PyFrameObject *frame, PyObject *code)
{
    int lasti = PyFrame_GetLasti(frame);
    LineSlot *slot = line_slot(cache, code, lasti);
    if (slot->code == code && slot->lasti == lasti) {
        return slot->line;
    }
    return remember_line(slot, code, lasti, PyFrame_GetLineNumber(frame));
}

/* The same for the frame a cursor is at (_cframes.h; its positions are not a frame
   object's, so a cache serves one or the other). */
static int
cursor_line(LineSlot *cache, const FrameCursor *frames, PyObject *code)
{
    int lasti = frames_lasti(frames);
    LineSlot *slot = line_slot(cache, code, lasti);
    if (slot->code == code && slot->lasti == lasti) {
        return slot->line;
    }
    return remember_line(slot, code, lasti, frames_line(frames));
}

/* ---------------------------------------------------------------- TimedStep */

typedef struct {
    PyObject_HEAD
    PyObject *clock;
    PyObject *instruments;
    PyObject *finish;
    PyObject *first_step;
    PyObject *note_suspension;
    PyObject *on_error;
    PyObject *frame_kinds; /* id(code) -> frame kind, or None: no C suspension walk */
    PyObject *code_kind;   /* code -> frame kind, filling frame_kinds */
    PyObject *leaf_types;  /* type -> True when its objects end an await chain */
    vectorcallfunc vectorcall;
    KindSlot kind_cache[KIND_SLOTS];
    LineSlot line_cache[LINE_SLOTS];
} TimedStep;

/* The kind of a code object, asking `code_kind` (which caches it) the first time. */
static long
classified_kind(TimedStep *self, PyObject *code)
{
    long kind = frame_kind(self->frame_kinds, self->kind_cache, code);
    if (kind >= 0 || PyErr_Occurred()) {
        return kind;
    }
    PyObject *value = PyObject_CallOneArg(self->code_kind, code);
    if (value == NULL) {
        return -1;
    }
    kind = PyLong_AsLong(value);
    Py_DECREF(value);
    return kind < 0 ? -1 : frame_kind(self->frame_kinds, self->kind_cache, code);
}

/* 1 when `obj` ends an await chain (an awaitable with none of cr_frame, gi_frame,
   cr_await, gi_yieldfrom: a future's iterator, a future), 0 if not, -1 on error. Decided
   once per type. */
static int
is_leaf(TimedStep *self, PyObject *obj)
{
    PyObject *type = (PyObject *)Py_TYPE(obj);
    PyObject *known = PyDict_GetItemWithError(self->leaf_types, type); /* borrowed */
    if (known != NULL) {
        return known == Py_True;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int leaf = !PyObject_HasAttr(obj, str_cr_frame) && !PyObject_HasAttr(obj, str_gi_frame) &&
               !PyObject_HasAttr(obj, str_cr_await) && !PyObject_HasAttr(obj, str_gi_yieldfrom);
    if (PyDict_SetItem(self->leaf_types, type, leaf ? Py_True : Py_False) < 0) {
        return -1;
    }
    return leaf;
}

/* Registry.note_suspension for a task running a user coroutine: walk the await chain
   (cr_await / gi_yieldfrom) to the innermost user frame and keep its (code, line).
   1 when done, 0 to let the Python version do it (a library coroutine to rename the
   task after, an awaitable that is neither coroutine nor generator), -1 on error. */
static int
note_suspension_fast(TimedStep *self, RecordCore *core, PyObject *coro)
{
    if (self->frame_kinds == Py_None || core->code == Py_None) {
        return 0;
    }
    long kind = classified_kind(self, core->code);
    if (kind != KIND_USER) {
        return kind < 0 && PyErr_Occurred() ? -1 : 0;
    }
    PyObject *found = NULL; /* code of the innermost user frame (borrowed from `frame`) */
    int line = 0, status = 1;
    Py_INCREF(coro);
    for (int depth = 0; coro != Py_None && depth < MAX_WALK; depth++) {
        int is_coro = PyCoro_CheckExact(coro);
        if (!is_coro && !PyGen_CheckExact(coro)) {
            int leaf = is_leaf(self, coro);
            status = leaf < 0 ? -1 : leaf; /* anything else: the Python walk */
            break;
        }
        PyObject *frame = PyObject_GetAttr(coro, is_coro ? str_cr_frame : str_gi_frame);
        PyObject *next = frame == NULL ? NULL
                                       : PyObject_GetAttr(coro, is_coro ? str_cr_await
                                                                        : str_gi_yieldfrom);
        if (next == NULL) {
            Py_XDECREF(frame);
            status = -1;
            break;
        }
        if (frame != Py_None) {
            PyObject *code = (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
            long frame_kind_value = classified_kind(self, code);
            if (frame_kind_value == KIND_USER) {
                line = frame_line(self->line_cache, (PyFrameObject *)frame, code);
                found = code; /* kept alive by frame_kinds */
            }
            Py_DECREF(code);
            if (frame_kind_value < 0) {
                Py_DECREF(frame);
                Py_DECREF(next);
                status = PyErr_Occurred() ? -1 : 0;
                break;
            }
        }
        Py_DECREF(frame);
        Py_SETREF(coro, next);
    }
    Py_DECREF(coro);
    if (status <= 0) {
        return status;
    }
    PyObject *at = found == NULL ? Py_NewRef(Py_None) : Py_BuildValue("(Oi)", found, line);
    if (at == NULL) {
        return -1;
    }
    Py_SETREF(core->longest_step_at, at);
    return 1;
}

/* Account a step that ran from `start` to `end` (the Python version's `account`). */
static int
account_step(TimedStep *self, PyObject *record, RecordCore *core, PyObject *task, double start,
             double end)
{
    double duration = end - start;
    core->busy += duration;
    core->steps += 1;

    static DirectMethod task_done;
    PyObject *done_result = call_method_noargs(&task_done, task, str_done);
    if (done_result == NULL) {
        return -1;
    }
    int done = PyObject_IsTrue(done_result);
    Py_DECREF(done_result);
    if (done < 0) {
        return -1;
    }
    if (core->first_step == NULL || core->first_step == Py_None) {
        PyObject *first = PyFloat_FromDouble(start);
        if (first == NULL) {
            return -1;
        }
        Py_XSETREF(core->first_step, first);
        /* A task that finished in its first step only needs first_step() for the
           task_created hook (the record's name is read at finish). */
        int wanted = !done ? 1
                     : PyDict_GET_SIZE(self->instruments) == 0
                         ? 0
                         : PyDict_Contains(self->instruments, str_created);
        if (wanted < 0) {
            return -1;
        }
        if (wanted) {
            PyObject *r = PyObject_CallFunctionObjArgs(self->first_step, record, task, NULL);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    }
    if (duration > core->longest_step) {
        core->longest_step = duration;
        if (!done) {
            static DirectMethod task_get_coro;
            PyObject *coro = call_method_noargs(&task_get_coro, task, str_get_coro);
            if (coro == NULL) {
                return -1;
            }
            int noted = note_suspension_fast(self, core, coro);
            if (noted == 0) {
                PyObject *r =
                    PyObject_CallFunctionObjArgs(self->note_suspension, record, coro, NULL);
                noted = r == NULL ? -1 : 1;
                Py_XDECREF(r);
            }
            Py_DECREF(coro);
            if (noted < 0) {
                return -1;
            }
        }
    }
    if (done) {
        PyObject *ended = PyFloat_FromDouble(end);
        if (ended == NULL) {
            return -1;
        }
        PyObject *finish_args[] = {record, task, ended};
        PyObject *r = PyObject_Vectorcall(self->finish, finish_args, 3, NULL);
        Py_DECREF(ended);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    int after = PyDict_GET_SIZE(self->instruments) == 0
                    ? 0
                    : PyDict_Contains(self->instruments, str_after);
    if (after <= 0) {
        return after;
    }
    PyObject *d = PyFloat_FromDouble(duration);
    if (d == NULL) {
        return -1;
    }
    int status = call_hook(self->instruments, str_after, record, d);
    Py_DECREF(d);
    return status;
}

/* Before the step: instruments, clock, scheduled time. Returns the start time, or -1.0
   with an exception set. */
static double
begin_step(TimedStep *self, PyObject *record, RecordCore *core)
{
    if (call_hook(self->instruments, str_before, record, NULL) < 0) {
        return -1.0;
    }
    double start = read_clock(self->clock);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1.0;
    }
    core->step_start = start;
    if (core->scheduled_at != 0.0) {
        core->scheduled += start - core->scheduled_at;
        core->scheduled_at = 0.0;
    }
    return start;
}

/* timed_step(record, task, callback, *args): run one task step and time it. */
static PyObject *
timed_step_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TimedStep *self = (TimedStep *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 3 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "timed_step(record, task, callback, *args)");
        return NULL;
    }
    PyObject *record = args[0], *task = args[1], *callback = args[2];
    RecordCore *core = as_core(record);
    double start = core == NULL ? -1.0 : begin_step(self, record, core);
    int timed = !(start == -1.0 && PyErr_Occurred());
    if (!timed) {
        report_internal_error(self->on_error, msg_step);
    }

    PyObject *result = PyObject_Vectorcall(callback, args + 3, nargs - 3, NULL);

    /* Account even when the callback raised, then hand its exception on unchanged. */
    if (timed) {
        PyObject *type = NULL, *value = NULL, *traceback = NULL;
        if (result == NULL) {
            PyErr_Fetch(&type, &value, &traceback);
        }
        core->step_start = 0.0;
        double end = read_clock(self->clock);
        if ((end == -1.0 && PyErr_Occurred()) ||
            account_step(self, record, core, task, start, end) < 0) {
            report_internal_error(self->on_error, msg_step);
        }
        if (result == NULL) {
            PyErr_Restore(type, value, traceback);
        }
    }
    return result;
}

static int
timed_step_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TimedStep *self = (TimedStep *)op;
    static char *keywords[] = {"clock",    "instruments", "finish",    "first_step",
                               "note_suspension", "on_error", "frame_kinds", "code_kind",
                               NULL};
    PyObject *clock, *instruments, *finish, *first_step, *note_suspension, *on_error;
    PyObject *frame_kinds = Py_None, *code_kind = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OOOO|OO:TimedStep", keywords, &clock,
                                     &PyDict_Type, &instruments, &finish, &first_step,
                                     &note_suspension, &on_error, &frame_kinds, &code_kind)) {
        return -1;
    }
    if (frame_kinds != Py_None && !PyDict_Check(frame_kinds)) {
        PyErr_SetString(PyExc_TypeError, "frame_kinds must be a dict or None");
        return -1;
    }
    Py_XSETREF(self->frame_kinds, Py_NewRef(frame_kinds));
    Py_XSETREF(self->code_kind, Py_NewRef(code_kind));
    Py_XSETREF(self->leaf_types, PyDict_New());
    if (self->leaf_types == NULL) {
        return -1;
    }
    memset(self->kind_cache, 0, sizeof(self->kind_cache));
    memset(self->line_cache, 0, sizeof(self->line_cache));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->instruments, Py_NewRef(instruments));
    Py_XSETREF(self->finish, Py_NewRef(finish));
    Py_XSETREF(self->first_step, Py_NewRef(first_step));
    Py_XSETREF(self->note_suspension, Py_NewRef(note_suspension));
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    self->vectorcall = timed_step_vectorcall;
    return 0;
}

static int
timed_step_traverse(PyObject *op, visitproc visit, void *arg)
{
    TimedStep *self = (TimedStep *)op;
    return visit_fields(OBJECT_FIELDS(TimedStep, self, clock, leaf_types), visit, arg);
}

static int
timed_step_clear(PyObject *op)
{
    TimedStep *self = (TimedStep *)op;
    clear_fields(OBJECT_FIELDS(TimedStep, self, clock, leaf_types));
    return 0;
}

static void
timed_step_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    timed_step_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject TimedStepType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.TimedStep",
    .tp_doc = "timed_step(record, task, callback, *args): run and time one task step.",
    .tp_basicsize = sizeof(TimedStep),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(TimedStep, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = timed_step_init,
    .tp_traverse = timed_step_traverse,
    .tp_clear = timed_step_clear,
    .tp_dealloc = timed_step_dealloc,
};

/* ---------------------------------------------------------------- CallSoon */

typedef struct {
    PyObject_HEAD
    PyObject *original;
    PyObject *live;
    PyObject *kinds;
    PyObject *classify;
    PyObject *step_names;
    PyObject *timed_step;
    PyObject *discover;
    PyObject *note_cancel;
    PyObject *clock;
    PyObject *on_error;
    vectorcallfunc vectorcall;
} CallSoon;

/* The callback's kind: 0 not a task step, 1 a bound method (check its name), 2 a C
   step wrapper. -1 with an exception set on failure. */
static long
callback_kind(CallSoon *self, PyObject *callback)
{
    PyObject *type = (PyObject *)Py_TYPE(callback);
    PyObject *kind = PyDict_GetItemWithError(self->kinds, type); /* borrowed */
    if (kind != NULL) {
        return PyLong_AsLong(kind);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *classified = PyObject_CallOneArg(self->classify, type);
    if (classified == NULL) {
        return -1;
    }
    long value = PyLong_AsLong(classified);
    Py_DECREF(classified);
    return value;
}

/* Return a new reference to the record of the task that owns `callback`, Py_None when
   the callback is not a task step (or the task is not tracked), NULL on error. Sets
   *owner to a new reference to the task when a record is returned. */
static PyObject *
step_record(CallSoon *self, PyObject *loop, PyObject *callback, PyObject **owner)
{
    long kind = callback_kind(self, callback);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind == 0) {
        Py_RETURN_NONE;
    }
    PyObject *task;
    if (kind == 1 && PyCFunction_Check(callback)) {
        /* The C task's wakeup, a builtin method: its name and self without attribute
           lookups (~500 instructions per wakeup). */
        const char *name = ((PyCFunctionObject *)callback)->m_ml->ml_name;
        PyObject *self_of = PyCFunction_GET_SELF(callback);
        if (name == NULL || strcmp(name, "task_wakeup") != 0 || self_of == NULL) {
            Py_RETURN_NONE;
        }
        task = Py_NewRef(self_of);
        goto have_task;
    }
    if (kind != 2) {
        PyObject *name = PyObject_GetAttr(callback, str_name);
        if (name == NULL) {
            return NULL;
        }
        int is_step = PySet_Contains(self->step_names, name);
        Py_DECREF(name);
        if (is_step < 0) {
            return NULL;
        }
        if (!is_step) {
            Py_RETURN_NONE;
        }
    }
    task = PyObject_GetAttr(callback, str_self);
    if (task == NULL) {
        return NULL;
    }
have_task:;
    PyObject *key = PyLong_FromVoidPtr(task);
    if (key == NULL) {
        Py_DECREF(task);
        return NULL;
    }
    PyObject *record = PyDict_GetItemWithError(self->live, key); /* borrowed */
    Py_DECREF(key);
    if (record != NULL) {
        Py_INCREF(record);
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(task);
        return NULL;
    }
    else {
        record = PyObject_CallFunctionObjArgs(self->discover, task, loop, NULL);
        if (record == NULL) {
            Py_DECREF(task);
            return NULL;
        }
    }
    if (record == Py_None) {
        Py_DECREF(task);
        return record;
    }
    *owner = task;
    return record;
}

/* Note that the task is ready (and, for a wakeup, what woke it). */
static int
note_scheduled(CallSoon *self, PyObject *record, PyObject *loop, PyObject *const *rest,
               Py_ssize_t nrest)
{
    RecordCore *core = as_core(record);
    if (core == NULL) {
        return -1;
    }
    double now = read_clock(self->clock);
    if (now == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    core->scheduled_at = now;
    if (nrest == 0) {
        return 0;
    }
    /* Woken by what it waited for; a step without args is the task rescheduling itself
       (see LoopMonitor: spinning). */
    core->waited_at = core->steps;
    if (core->cancel_cause != Py_None && core->cancel_cause != NULL) {
        return 0;
    }
    /* A wakeup with a cancelled future delivers a cancellation. */
    static DirectMethod future_cancelled;
    PyObject *cancelled = call_method_noargs(&future_cancelled, rest[0], str_cancelled);
    if (cancelled == NULL) {
        return -1;
    }
    int is_cancelled = PyObject_IsTrue(cancelled);
    Py_DECREF(cancelled);
    if (is_cancelled <= 0) {
        return is_cancelled;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(self->note_cancel, record, loop, rest[0], NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* call_soon(loop, callback, *args, context=None), installed on the loop class. */
static PyObject *
call_soon_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CallSoon *self = (CallSoon *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        /* Let the original method raise its own TypeError. */
        return PyObject_Vectorcall(self->original, args, nargs, kwnames);
    }
    PyObject *loop = args[0], *callback = args[1], *owner = NULL;
    PyObject *record = step_record(self, loop, callback, &owner);
    if (record != NULL && record != Py_None &&
        note_scheduled(self, record, loop, args + 2, nargs - 2) < 0) {
        Py_CLEAR(record);
        Py_CLEAR(owner);
    }
    if (record == NULL) {
        report_internal_error(self->on_error, msg_call_soon);
    }
    if (record == NULL || record == Py_None) {
        Py_XDECREF(record);
        return PyObject_Vectorcall(self->original, args, nargs, kwnames);
    }
    /* original(loop, timed_step, record, owner, callback, *args, context=...) */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t total = nargs + 3 + nkw;
    PyObject *small[16];
    PyObject **stack = total <= 16 ? small : PyMem_Malloc(total * sizeof(PyObject *));
    PyObject *result = NULL;
    if (stack == NULL) {
        PyErr_NoMemory();
    }
    else {
        stack[0] = loop;
        stack[1] = self->timed_step;
        stack[2] = record;
        stack[3] = owner;
        stack[4] = callback;
        for (Py_ssize_t i = 2; i < nargs + nkw; i++) {
            stack[i + 3] = args[i];
        }
        result = PyObject_Vectorcall(self->original, stack, nargs + 3, kwnames);
        if (stack != small) {
            PyMem_Free(stack);
        }
    }
    Py_DECREF(record);
    Py_DECREF(owner);
    return result;
}

static int
call_soon_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    CallSoon *self = (CallSoon *)op;
    static char *keywords[] = {"original", "live", "kinds", "classify", "step_names",
                               "timed_step", "discover", "note_cancel", "clock", "on_error",
                               NULL};
    PyObject *original, *live, *kinds, *classify, *step_names, *timed_step, *discover,
        *note_cancel, *clock, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!OO!OOOOO:CallSoon", keywords,
                                     &original, &PyDict_Type, &live, &PyDict_Type, &kinds,
                                     &classify, &PyFrozenSet_Type, &step_names, &timed_step,
                                     &discover, &note_cancel, &clock, &on_error)) {
        return -1;
    }
    Py_XSETREF(self->original, Py_NewRef(original));
    Py_XSETREF(self->live, Py_NewRef(live));
    Py_XSETREF(self->kinds, Py_NewRef(kinds));
    Py_XSETREF(self->classify, Py_NewRef(classify));
    Py_XSETREF(self->step_names, Py_NewRef(step_names));
    Py_XSETREF(self->timed_step, Py_NewRef(timed_step));
    Py_XSETREF(self->discover, Py_NewRef(discover));
    Py_XSETREF(self->note_cancel, Py_NewRef(note_cancel));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    self->vectorcall = call_soon_vectorcall;
    return 0;
}

static int
call_soon_traverse(PyObject *op, visitproc visit, void *arg)
{
    CallSoon *self = (CallSoon *)op;
    return visit_fields(OBJECT_FIELDS(CallSoon, self, original, on_error), visit, arg);
}

static int
call_soon_clear(PyObject *op)
{
    CallSoon *self = (CallSoon *)op;
    clear_fields(OBJECT_FIELDS(CallSoon, self, original, on_error));
    return 0;
}

static void
call_soon_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    call_soon_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject CallSoonType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.CallSoon",
    .tp_doc = "call_soon(loop, callback, *args, context=None), routing task steps "
              "through the timed step trampoline.",
    .tp_basicsize = sizeof(CallSoon),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(CallSoon, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_descr_get = bind_as_method,
    .tp_new = PyType_GenericNew,
    .tp_init = call_soon_init,
    .tp_traverse = call_soon_traverse,
    .tp_clear = call_soon_clear,
    .tp_dealloc = call_soon_dealloc,
};

/* ---------------------------------------------------------------- shared helpers */

/* The object a weak reference points to (new reference), or NULL if it is dead. */
static PyObject *
weakref_target(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *target = NULL;
    if (PyWeakref_GetRef(ref, &target) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return target;
#else
    PyObject *target = PyWeakref_GetObject(ref); /* borrowed */
    if (target == NULL || target == Py_None) {
        PyErr_Clear();
        return NULL;
    }
    return Py_NewRef(target);
#endif
}

static PyObject *str_coro, *str_cr_suspended, *str_cr_code, *str_get_name, *str_append, *str_exception,
    *str_key,
    *str_finished_hook, *empty_tuple;

/* ---------------------------------------------------------------- TaskRef */

/* A weak reference to a task that carries the task's registry key, like the standard
   library's weakref.KeyedRef (which the pure-Python registry uses): the weakref callback
   (Registry._gone) reads the key from it, so no table from weakrefs to keys is kept
   (that table cost ~800 instructions per task: two int objects, an insertion and a
   deletion). `key` is set to None when the registry stops watching the task. */
typedef struct {
    PyWeakReference base;
    PyObject *key;
} TaskRef;

static int
task_ref_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((TaskRef *)op)->key);
    return _PyWeakref_RefType.tp_traverse(op, visit, arg);
}

static int
task_ref_clear(PyObject *op)
{
    Py_CLEAR(((TaskRef *)op)->key);
    return _PyWeakref_RefType.tp_clear(op);
}

static void
task_ref_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    Py_CLEAR(((TaskRef *)op)->key);
    _PyWeakref_RefType.tp_dealloc(op); /* unlinks it from its referent and frees it */
}

static PyMemberDef task_ref_members[] = {
    {"key", T_OBJECT, offsetof(TaskRef, key), 0, "The task's registry key (None: dropped)."},
    {NULL},
};

static PyTypeObject TaskRefType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.TaskRef",
    .tp_doc = "TaskRef(task, callback): a weak reference to a task with its registry key.",
    .tp_basicsize = sizeof(TaskRef),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = task_ref_traverse,
    .tp_clear = task_ref_clear,
    .tp_dealloc = task_ref_dealloc,
    .tp_members = task_ref_members,
    /* .tp_base = &_PyWeakref_RefType, set before PyType_Ready */
};

/* A new TaskRef to `task` with `callback` and `key`, NULL on error. */
static PyObject *
new_task_ref(PyObject *task, PyObject *callback, PyObject *key)
{
    PyObject *args = PyTuple_Pack(2, task, callback);
    if (args == NULL) {
        return NULL;
    }
    PyObject *ref = TaskRefType.tp_new(&TaskRefType, args, NULL);
    Py_DECREF(args);
    if (ref != NULL) {
        Py_XSETREF(((TaskRef *)ref)->key, Py_NewRef(key));
    }
    return ref;
}

/* The registry stops watching a task: its weakref callback, if it still runs, finds no
   key and does nothing. */
static void
drop_task_ref(PyObject *ref)
{
    if (Py_IS_TYPE(ref, &TaskRefType)) {
        Py_SETREF(((TaskRef *)ref)->key, Py_NewRef(Py_None));
    }
    else if (PyObject_SetAttr(ref, str_key, Py_None) < 0) { /* weakref.KeyedRef */
        PyErr_Clear();
    }
}

/* ---------------------------------------------------------------- filing records */



/* Registry.new_record's C twin (the registry's `new_record` when the accelerator is
   built): the registry's containers a record is filed in. */
typedef struct {
    PyObject_HEAD
    PyObject *slow; /* Registry._new_record: every case this does not handle */
    PyObject *live;
    PyObject *sites;
    PyObject *ids;
    PyObject *gone;
    PyObject *clock;
    vectorcallfunc vectorcall;
} RecordMaker;

static PyTypeObject RecordMakerType;

/* A direct-mapped cache in front of site_at for the recorder: a new PyLong key and a
   dict lookup per task (~300 instructions) become a compare. A cached site stays
   right: the registry never removes a site, and a site keeps its code object alive
   (its `raw` location holds it), so the code's address is not reused meanwhile. */
#define SITE_SLOTS 64

typedef struct {
    PyObject *code; /* borrowed: kept alive by `site` */
    long line;
    PyObject *site; /* strong reference, or NULL */
} SiteSlot;

/* The aggregate of the site (code, line) when the registry has one that every record
   of the site can share (borrowed), else NULL (with an exception set on error). The key
   is site_key_of's in _registry.py. */
static SiteCore *
site_at(PyObject *sites, PyObject *code, long line)
{
    unsigned long long address = (unsigned long long)(uintptr_t)code;
    if (line <= 0 || line >= LINE_SPAN || address >= ADDRESS_SPAN) {
        return NULL;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(address | ((unsigned long long)line << LINE_SHIFT));
    if (key == NULL) {
        return NULL;
    }
    PyObject *site = PyDict_GetItemWithError(sites, key); /* borrowed */
    Py_DECREF(key);
    if (site == NULL || !PyObject_TypeCheck(site, &SiteCoreType) ||
        ((SiteCore *)site)->raw == Py_None) {
        return NULL;
    }
    return (SiteCore *)site;
}

static void
clear_site_cache(SiteSlot *cache)
{
    for (size_t i = 0; i < SITE_SLOTS; i++) {
        Py_CLEAR(cache[i].site);
        cache[i].code = NULL;
    }
}

/* site_at through the recorder's cache. */
static SiteCore *
cached_site_at(SiteSlot *cache, PyObject *sites, PyObject *code, long line)
{
    SiteSlot *slot = &cache[slot_of(code, (size_t)line, SITE_SLOTS)];
    if (slot->site != NULL && slot->code == code && slot->line == line) {
        return (SiteCore *)slot->site;
    }
    SiteCore *site = site_at(sites, code, line);
    if (site != NULL) {
        slot->code = code;
        slot->line = line;
        Py_XSETREF(slot->site, Py_NewRef((PyObject *)site));
    }
    return site;
}

/* The task new_record_in recorded last, compared by address only (never dereferenced):
   CreateTask clears it before creating a task, so finding its new task here means the
   task was recorded while it was being created, without a lookup in `live`. */
static const void *last_recorded_task = NULL;

/* Create and file the record of a new task created at a known site (`site`, whose `raw`
   is the location tuple every task of the site shares). New reference, NULL on error. */
static PyObject *
new_record_in(RecordMaker *maker, PyObject *record_class, PyObject *task, PyObject *code,
              SiteCore *site, PyObject *parent_id)
{
    site->created += 1;
    site->alive += 1;
    PyObject *key = PyLong_FromVoidPtr(task);
    if (key == NULL) {
        return NULL;
    }
    PyObject *record = NULL, *next_id = NULL;
    PyObject *ref = new_task_ref(task, maker->gone, key);
    if (ref == NULL) {
        goto error;
    }
    PyTypeObject *cls = (PyTypeObject *)record_class;
    record = cls->tp_new(cls, empty_tuple, NULL);
    if (record == NULL || (next_id = PyIter_Next(maker->ids)) == NULL) {
        goto error;
    }
    RecordCore *core = (RecordCore *)record;
    core->id = PyLong_AsSsize_t(next_id);
    if (core->id == -1 && PyErr_Occurred()) {
        goto error;
    }
    double created = read_clock(maker->clock);
    if (created == -1.0 && PyErr_Occurred()) {
        goto error;
    }
    core->created = created;
    Py_SETREF(core->code, Py_NewRef(code));
    Py_SETREF(core->created_at, Py_NewRef(site->raw));
    Py_SETREF(core->parent_id, Py_NewRef(parent_id));
    Py_SETREF(core->owner_key, Py_NewRef(key));
    Py_SETREF(core->ref, Py_NewRef(ref));
    Py_SETREF(core->site, Py_NewRef((PyObject *)site));
    if (PyDict_SetItem(maker->live, key, record) < 0) {
        goto error;
    }
    /* While live, the record is held by `live` and holds nothing that leads back to it
       (its fields are descriptions, its weakref's callback is the registry's), so the
       cyclic collector has nothing to find in it or its weakref: both leave it now
       rather than being scanned by every young collection while the task runs (~1,500
       instructions per task on the spawn workload). Registry._task_finished tracks a
       record again when it ends otherwise than completed (it may then keep its weakref,
       whose callback leads back to the registry). */
    PyObject_GC_UnTrack(record);
    PyObject_GC_UnTrack(ref);
    last_recorded_task = task;
    Py_DECREF(key);
    Py_DECREF(ref);
    Py_DECREF(next_id);
    return record;
error:
    Py_DECREF(key);
    Py_XDECREF(ref);
    Py_XDECREF(next_id);
    Py_XDECREF(record);
    return NULL;
}

/* ---------------------------------------------------------------- TaskRecorder */

/* discover(task, loop): the record of a task that schedules a step untracked, or None.
   The common case (a new task of a known class, on the loop seen last, running a user
   coroutine, created under a user frame at a known site) is handled here; everything
   else is handed to `slow` (AsyncioBackend._discover), which handles every case and
   fills the caches this path reads, so it runs once per new code, site or loop. */
typedef struct {
    PyObject_HEAD
    PyObject *slow;
    PyObject *task_types;  /* tuple of task classes handled here */
    PyObject *frame_kinds; /* id(code) -> frame kind */
    PyObject *current_tasks; /* asyncio's {loop: running task} */
    PyObject *record_class;
    PyObject *maker;    /* the registry's RecordMaker, which files the record */
    PyObject *loop_ref; /* weakref to the loop the slow path saw last, or NULL */
    vectorcallfunc vectorcall;
    KindSlot kind_cache[KIND_SLOTS];
    LineSlot line_cache[LINE_SLOTS];
    SiteSlot site_cache[SITE_SLOTS];
} TaskRecorder;


static int
is_known_task(TaskRecorder *self, PyObject *task)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->task_types);
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((PyObject *)Py_TYPE(task) == PyTuple_GET_ITEM(self->task_types, i)) {
            return 1;
        }
    }
    return 0;
}

/* Walk from the current frame to the innermost user frame (AsyncioBackend.user_frame).
   Returns 1 with *code (new reference) and *line set, 0 when the slow path must decide
   (an unknown code, an entry point, no user frame), -1 on error. */
static int
creating_frame(TaskRecorder *self, PyObject **code, int *line)
{
    FrameCursor frames;
    frames_start(&frames);
    int found = 0;
    for (int depth = 0; !frames_done(&frames) && depth < MAX_WALK; depth++) {
        PyObject *frame_code = frames_code(&frames); /* borrowed */
        long kind = frame_kind(self->frame_kinds, self->kind_cache, frame_code);
        if (kind == KIND_USER) {
            *code = Py_NewRef(frame_code);
            *line = cursor_line(self->line_cache, &frames, frame_code);
            found = 1;
            break;
        }
        if (kind != KIND_LIBRARY) {
            found = PyErr_Occurred() ? -1 : 0;
            break;
        }
        frames_back(&frames);
    }
    frames_stop(&frames);
    return found;
}

/* The parent task's record id (new reference; None when untracked or no task runs). */
static PyObject *
parent_id_of(TaskRecorder *self, PyObject *loop)
{
    PyObject *parent = PyDict_GetItemWithError(self->current_tasks, loop); /* borrowed */
    if (parent == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    PyObject *key = PyLong_FromVoidPtr(parent);
    if (key == NULL) {
        return NULL;
    }
    PyObject *record = PyDict_GetItemWithError(((RecordMaker *)self->maker)->live, key);
    Py_DECREF(key); /* `record` is borrowed */
    if (record == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    if (!PyObject_TypeCheck(record, &RecordCoreType)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSsize_t(((RecordCore *)record)->id);
}

/* The loop is the one the slow path saw last (so the loop monitor knows it). */
static int
is_known_loop(TaskRecorder *self, PyObject *loop)
{
    if (self->loop_ref == NULL) {
        return 0;
    }
    PyObject *target = weakref_target(self->loop_ref);
    int same = target == loop;
    Py_XDECREF(target);
    return same;
}

/* What a coroutine refers to (gc.get_referents): its frame's locals, and more. */
#define MAX_REFERENTS 16
typedef struct {
    PyObject *items[MAX_REFERENTS];
    int count;
} Referents;

static int
collect_referent(PyObject *obj, void *arg)
{
    Referents *found = (Referents *)arg;
    if (obj != NULL && found->count < MAX_REFERENTS) {
        found->items[found->count++] = Py_NewRef(obj);
    }
    return 0;
}

/* The user coroutine's code a library wrapper coroutine will run (new reference), or
   NULL without an exception when the slow path must look (_compat.py:
   wrapped_coroutine_code, whose search this repeats: AnyIO spawns every task as a
   wrapper whose argument, or whose argument's `_coro`, is the user's coroutine). */
static PyObject *
wrapped_user_code(TaskRecorder *self, PyObject *coro)
{
    traverseproc traverse = Py_TYPE(coro)->tp_traverse;
    if (traverse == NULL) {
        return NULL;
    }
    Referents found = {.count = 0};
    traverse(coro, collect_referent, &found);
    PyObject *result = NULL;
    for (int i = 0; i < found.count && result == NULL; i++) {
        PyObject *candidate = Py_NewRef(found.items[i]);
        if (!PyCoro_CheckExact(candidate) && (Py_TYPE(candidate)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            Py_SETREF(candidate, PyObject_GetAttr(candidate, str_coro));
            if (candidate == NULL) {
                PyErr_Clear();
                continue;
            }
        }
        if (PyCoro_CheckExact(candidate) && candidate != coro) {
            PyObject *code = PyObject_GetAttr(candidate, str_cr_code);
            if (code == NULL) {
                PyErr_Clear();
            }
            else if (frame_kind(self->frame_kinds, self->kind_cache, code) == KIND_USER) {
                result = code;
            }
            else {
                Py_DECREF(code);
                PyErr_Clear();
            }
        }
        Py_DECREF(candidate);
    }
    for (int i = 0; i < found.count; i++) {
        Py_DECREF(found.items[i]);
    }
    return result;
}

/* The fast path: 1 with *record set (new reference), 0 to take the slow path, -1 on
   error. Nothing is changed before the last step, so falling back is always safe. */
static int
discover_fast(TaskRecorder *self, PyObject *task, PyObject *loop, PyObject **record)
{
    if (!is_known_task(self, task) || !is_known_loop(self, loop)) {
        return 0;
    }
    int status = 0;
    PyObject *coro = NULL, *suspended = NULL, *code = NULL, *frame_code = NULL,
             *parent_id = NULL, *done = NULL;
    static DirectMethod new_task_done, new_task_get_coro;
    done = call_method_noargs(&new_task_done, task, str_done);
    if (done != Py_False) {
        status = done == NULL ? -1 : 0;
        goto exit;
    }
    coro = call_method_noargs(&new_task_get_coro, task, str_get_coro);
    if (coro == NULL) {
        status = -1;
        goto exit;
    }
    if (!PyCoro_CheckExact(coro)) {
        goto exit;
    }
    /* A coroutine that already ran: the task existed before taskscope (adopted). */
    suspended = PyObject_GetAttr(coro, str_cr_suspended);
    if (suspended != Py_False) {
        status = suspended == NULL ? -1 : 0;
        goto exit;
    }
    code = PyObject_GetAttr(coro, str_cr_code);
    if (code == NULL) {
        status = -1;
        goto exit;
    }
    long kind = frame_kind(self->frame_kinds, self->kind_cache, code);
    if (kind == KIND_LIBRARY) {
        /* A library wrapper (AnyIO's): the task is named after the coroutine it runs. */
        Py_SETREF(code, wrapped_user_code(self, coro));
        if (code == NULL) {
            goto exit;
        }
    }
    else if (kind != KIND_USER) { /* not seen yet */
        status = PyErr_Occurred() ? -1 : 0;
        goto exit;
    }
    int line = 0;
    status = creating_frame(self, &frame_code, &line);
    if (status <= 0) {
        goto exit;
    }
    status = 0;
    PyObject *site = (PyObject *)cached_site_at(
        self->site_cache, ((RecordMaker *)self->maker)->sites, frame_code, line);
    if (site == NULL) { /* a new site: the slow path creates its aggregate */
        status = PyErr_Occurred() ? -1 : 0;
        goto exit;
    }
    parent_id = parent_id_of(self, loop);
    if (parent_id == NULL) {
        status = -1;
        goto exit;
    }
    Py_INCREF(site);
    *record = new_record_in((RecordMaker *)self->maker, self->record_class, task, code,
                            (SiteCore *)site, parent_id);
    Py_DECREF(site);
    status = *record == NULL ? -1 : 1;
exit:
    Py_XDECREF(done);
    Py_XDECREF(coro);
    Py_XDECREF(suspended);
    Py_XDECREF(code);
    Py_XDECREF(frame_code);
    Py_XDECREF(parent_id);
    return status;
}

static PyObject *
task_recorder_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TaskRecorder *self = (TaskRecorder *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "discover(task, loop)");
        return NULL;
    }
    PyObject *record = NULL;
    int status = discover_fast(self, args[0], args[1], &record);
    if (status != 0) {
        return status > 0 ? record : NULL;
    }
    /* The slow path; the loop it saw is the one the fast path accepts next. */
    record = PyObject_Vectorcall(self->slow, args, 2, NULL);
    if (record != NULL && !is_known_loop(self, args[1])) {
        PyObject *ref = PyWeakref_NewRef(args[1], NULL);
        if (ref == NULL) {
            PyErr_Clear(); /* a loop class without weak references: always slow */
        }
        Py_XSETREF(self->loop_ref, ref);
    }
    return record;
}

static int
task_recorder_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TaskRecorder *self = (TaskRecorder *)op;
    static char *keywords[] = {"slow",         "task_types", "frame_kinds", "current_tasks",
                               "record_class", "maker",      NULL};
    PyObject *slow, *task_types, *frame_kinds, *current_tasks, *record_class, *maker;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!O!O!O!:TaskRecorder", keywords, &slow,
                                     &PyTuple_Type, &task_types, &PyDict_Type, &frame_kinds,
                                     &PyDict_Type, &current_tasks, &PyType_Type, &record_class,
                                     &RecordMakerType, &maker)) {
        return -1;
    }
    if (!PyType_IsSubtype((PyTypeObject *)record_class, &RecordCoreType)) {
        PyErr_SetString(PyExc_TypeError, "record_class must subclass RecordCore");
        return -1;
    }
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->task_types, Py_NewRef(task_types));
    Py_XSETREF(self->frame_kinds, Py_NewRef(frame_kinds));
    Py_XSETREF(self->current_tasks, Py_NewRef(current_tasks));
    Py_XSETREF(self->record_class, Py_NewRef(record_class));
    Py_XSETREF(self->maker, Py_NewRef(maker));
    Py_CLEAR(self->loop_ref);
    memset(self->kind_cache, 0, sizeof(self->kind_cache));
    memset(self->line_cache, 0, sizeof(self->line_cache));
    clear_site_cache(self->site_cache);
    self->vectorcall = task_recorder_vectorcall;
    return 0;
}

static int
task_recorder_traverse(PyObject *op, visitproc visit, void *arg)
{
    TaskRecorder *self = (TaskRecorder *)op;
    for (size_t i = 0; i < SITE_SLOTS; i++) {
        Py_VISIT(self->site_cache[i].site);
    }
    return visit_fields(OBJECT_FIELDS(TaskRecorder, self, slow, loop_ref), visit, arg);
}

static int
task_recorder_clear(PyObject *op)
{
    TaskRecorder *self = (TaskRecorder *)op;
    clear_site_cache(self->site_cache);
    clear_fields(OBJECT_FIELDS(TaskRecorder, self, slow, loop_ref));
    return 0;
}

static void
task_recorder_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    task_recorder_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject TaskRecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.TaskRecorder",
    .tp_doc = "discover(task, loop): record a new task (AsyncioBackend._discover's fast "
              "path).",
    .tp_basicsize = sizeof(TaskRecorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(TaskRecorder, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = task_recorder_init,
    .tp_traverse = task_recorder_traverse,
    .tp_clear = task_recorder_clear,
    .tp_dealloc = task_recorder_dealloc,
};

/* ---------------------------------------------------------------- RecordMaker */

/* Registry.new_record(task, record_class, created_at, code, parent_id) for a task
   created at a known site: what the trio backend and the asyncio backend's slow path
   call (the struct is above, with new_record_in). Anything else (a new site, no
   creation site, a record class not built on RecordCore) goes to `slow`, the Python
   method. */

/* The site of a (code, line) creation site, as site_at. */
static SiteCore *
known_site(PyObject *sites, PyObject *created_at)
{
    if (!PyTuple_CheckExact(created_at) || PyTuple_GET_SIZE(created_at) != 2 ||
        !PyCode_Check(PyTuple_GET_ITEM(created_at, 0)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(created_at, 1))) {
        return NULL;
    }
    long line = PyLong_AsLong(PyTuple_GET_ITEM(created_at, 1));
    if (line == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* a line too large for a long: not a key site_at makes */
        return NULL;
    }
    return site_at(sites, PyTuple_GET_ITEM(created_at, 0), line);
}

static PyObject *
record_maker_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RecordMaker *self = (RecordMaker *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 5 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) &&
        PyType_Check(args[1]) && PyType_IsSubtype((PyTypeObject *)args[1], &RecordCoreType)) {
        SiteCore *site = known_site(self->sites, args[2]);
        if (site != NULL) {
            Py_INCREF(site);
            PyObject *record = new_record_in(self, args[1], args[0], args[3], site, args[4]);
            Py_DECREF(site);
            return record;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static int
record_maker_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    RecordMaker *self = (RecordMaker *)op;
    static char *keywords[] = {"slow", "live", "sites", "ids", "gone", "clock", NULL};
    PyObject *slow, *live, *sites, *ids, *gone, *clock;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!OOO:RecordMaker", keywords, &slow,
                                     &PyDict_Type, &live, &PyDict_Type, &sites, &ids, &gone,
                                     &clock)) {
        return -1;
    }
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->live, Py_NewRef(live));
    Py_XSETREF(self->sites, Py_NewRef(sites));
    Py_XSETREF(self->ids, Py_NewRef(ids));
    Py_XSETREF(self->gone, Py_NewRef(gone));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    self->vectorcall = record_maker_vectorcall;
    return 0;
}

static int
record_maker_traverse(PyObject *op, visitproc visit, void *arg)
{
    RecordMaker *self = (RecordMaker *)op;
    return visit_fields(OBJECT_FIELDS(RecordMaker, self, slow, clock), visit, arg);
}

static int
record_maker_clear(PyObject *op)
{
    RecordMaker *self = (RecordMaker *)op;
    clear_fields(OBJECT_FIELDS(RecordMaker, self, slow, clock));
    return 0;
}

static void
record_maker_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    record_maker_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject RecordMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.RecordMaker",
    .tp_doc = "new_record(task, record_class, created_at, code, parent_id): "
              "Registry.new_record's fast path for known sites.",
    .tp_basicsize = sizeof(RecordMaker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(RecordMaker, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = record_maker_init,
    .tp_traverse = record_maker_traverse,
    .tp_clear = record_maker_clear,
    .tp_dealloc = record_maker_dealloc,
};

/* untrack(record): a record leaves the cyclic collector (see new_record_in and
   file_completed); for the Python Registry. */
static PyObject *
untrack(PyObject *module, PyObject *record)
{
    if (PyObject_TypeCheck(record, &RecordCoreType)) {
        PyObject_GC_UnTrack(record);
    }
    Py_RETURN_NONE;
}

/* track(record): the record (and its weakref) rejoin the cyclic collector; for a
   record that ends otherwise than completed (Registry._task_finished). */
static PyObject *
track(PyObject *module, PyObject *record)
{
    if (PyObject_TypeCheck(record, &RecordCoreType)) {
        if (!PyObject_GC_IsTracked(record)) {
            PyObject_GC_Track(record);
        }
        PyObject *ref = ((RecordCore *)record)->ref;
        if (ref != NULL && PyObject_IS_GC(ref) && !PyObject_GC_IsTracked(ref)) {
            PyObject_GC_Track(ref);
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef speedups_functions[] = {
    {"untrack", untrack, METH_O, "Untrack a finished task record from the cyclic GC."},
    {"track", track, METH_O, "Track a task record (and its weakref) in the cyclic GC again."},
    {NULL},
};

/* ---------------------------------------------------------------- TaskFinisher */

/* finish(record, task, ended): a task's last step ended at `ended`. A task that
   completed (no exception, not cancelled) while no instrument wants task_finished is
   moved to the history here (Registry.task_finished); every other ending goes to `slow`
   (AsyncioBackend.finish). */
typedef struct {
    PyObject_HEAD
    PyObject *slow;
    PyObject *instruments;
    PyObject *filer; /* Registry.task_finished: its C RecordFiler files completed tasks
                        here; anything else means every ending goes to `slow` */
    vectorcallfunc vectorcall;
} TaskFinisher;

/* Registry.task_finished's C twin (RecordFiler, below): the registry's containers a
   finished record is filed in. */
typedef struct {
    PyObject_HEAD
    PyObject *slow; /* Registry._task_finished: every other ending */
    PyObject *live;
    PyObject *history;
    PyObject *clock;
    vectorcallfunc vectorcall;
} RecordFiler;

static PyTypeObject RecordFilerType;

#define COMPLETED 1

/* Fold a completed record into its site aggregate. */
static void
fold_into_site(SiteCore *site, RecordCore *core, double ended)
{
    site->alive -= 1;
    site->completed += 1;
    site->busy += core->busy;
    site->wall += ended - core->created;
    if (core->longest_step > site->longest_step) {
        site->longest_step = core->longest_step;
    }
}

/* Registry.task_finished(record, COMPLETED, task, ended): `name` is the task's name
   just read (a new reference; NULL with an exception set when reading it failed). */
static int
file_completed(RecordFiler *filer, RecordCore *core, PyObject *name, PyObject *ended)
{
    double end = PyFloat_AsDouble(ended);
    if (end == -1.0 && PyErr_Occurred()) {
        Py_XDECREF(name);
        return -1;
    }
    core->state = COMPLETED;
    Py_SETREF(core->ended, Py_NewRef(ended));
    if (name != NULL && PyUnicode_Check(name)) {
        Py_SETREF(core->name, name);
    }
    else {
        Py_XDECREF(name);
        PyErr_Clear(); /* keep the last known name */
    }
    if (PyDict_DelItem(filer->live, core->owner_key) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            return -1;
        }
        PyErr_Clear();
    }
    if (core->ref != Py_None) {
        /* No weakref callback for a finished task. */
        drop_task_ref(core->ref);
        Py_SETREF(core->ref, Py_NewRef(Py_None));
    }
    if (PyObject_TypeCheck(core->site, &SiteCoreType)) {
        fold_into_site((SiteCore *)core->site, core, end);
    }
    static DirectMethod history_append;
    PyObject *r = call_method_onearg(&history_append, filer->history, str_append, (PyObject *)core);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    /* A completed record holds no task, no weakref and no exception: nothing that can
       lead back to it, so the cyclic collector need not scan the 10,000 in the history
       (plain Python cannot untrack; this cut the GC's cost per task by about half). */
    PyObject_GC_UnTrack((PyObject *)core);
    return 0;
}

static int
finish_completed(TaskFinisher *self, RecordCore *core, PyObject *task, PyObject *ended)
{
    static DirectMethod task_get_name;
    PyObject *name = call_method_noargs(&task_get_name, task, str_get_name);
    return file_completed((RecordFiler *)self->filer, core, name, ended);
}

/* 1 when the task completed (not cancelled, no exception), 0 if not, -1 on error. */
static int
completed(PyObject *task)
{
    static DirectMethod task_cancelled;
    PyObject *cancelled = call_method_noargs(&task_cancelled, task, str_cancelled);
    if (cancelled != Py_False) {
        if (cancelled == NULL) {
            return -1;
        }
        Py_DECREF(cancelled);
        return 0;
    }
    Py_DECREF(cancelled);
    /* The private attribute: exception() would mark it retrieved (_compat.py). */
    PyObject *exception = PyObject_GetAttr(task, str_exception);
    if (exception == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(exception);
    return exception == Py_None;
}

static PyObject *
task_finisher_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TaskFinisher *self = (TaskFinisher *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 3 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) &&
        PyFloat_CheckExact(args[2]) && PyObject_TypeCheck(args[0], &RecordCoreType) &&
        Py_IS_TYPE(self->filer, &RecordFilerType)) {
        RecordCore *core = (RecordCore *)args[0];
        int hooked = PyDict_GET_SIZE(self->instruments) == 0
                         ? 0
                         : PyDict_Contains(self->instruments, str_finished_hook);
        if (hooked < 0) {
            return NULL;
        }
        if (!hooked && core->state == 0) {
            int done = completed(args[1]);
            if (done < 0) {
                return NULL;
            }
            if (done) {
                if (finish_completed(self, core, args[1], args[2]) < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
        }
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static int
task_finisher_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TaskFinisher *self = (TaskFinisher *)op;
    static char *keywords[] = {"slow", "instruments", "filer", NULL};
    PyObject *slow, *instruments, *filer;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O:TaskFinisher", keywords, &slow,
                                     &PyDict_Type, &instruments, &filer)) {
        return -1;
    }
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->instruments, Py_NewRef(instruments));
    Py_XSETREF(self->filer, Py_NewRef(filer));
    self->vectorcall = task_finisher_vectorcall;
    return 0;
}

static int
task_finisher_traverse(PyObject *op, visitproc visit, void *arg)
{
    TaskFinisher *self = (TaskFinisher *)op;
    return visit_fields(OBJECT_FIELDS(TaskFinisher, self, slow, filer), visit, arg);
}

static int
task_finisher_clear(PyObject *op)
{
    TaskFinisher *self = (TaskFinisher *)op;
    clear_fields(OBJECT_FIELDS(TaskFinisher, self, slow, filer));
    return 0;
}

static void
task_finisher_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    task_finisher_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject TaskFinisherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.TaskFinisher",
    .tp_doc = "finish(record, task, ended): AsyncioBackend.finish's fast path for tasks "
              "that completed.",
    .tp_basicsize = sizeof(TaskFinisher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(TaskFinisher, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = task_finisher_init,
    .tp_traverse = task_finisher_traverse,
    .tp_clear = task_finisher_clear,
    .tp_dealloc = task_finisher_dealloc,
};

/* ---------------------------------------------------------------- RecordFiler */

/* Registry.task_finished(record, state, task, ended=None) for a record that completed:
   what the trio backend calls. The name is read with the record class's `name_of`.
   Any other ending goes to `slow`, the Python method. */
static PyObject *str_name_of;

static PyObject *
record_filer_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RecordFiler *self = (RecordFiler *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if ((nargs == 3 || nargs == 4) && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) &&
        PyLong_CheckExact(args[1]) && PyLong_AsLong(args[1]) == COMPLETED &&
        PyObject_TypeCheck(args[0], &RecordCoreType) && ((RecordCore *)args[0])->state == 0) {
        PyObject *ended;
        if (nargs == 4 && PyFloat_CheckExact(args[3])) {
            ended = Py_NewRef(args[3]);
        }
        else if (nargs == 3 || args[3] == Py_None) {
            double now = read_clock(self->clock);
            ended = now == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(now);
        }
        else {
            return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
        }
        if (ended == NULL) {
            return NULL;
        }
        PyObject *name =
            PyObject_CallMethodOneArg((PyObject *)Py_TYPE(args[0]), str_name_of, args[2]);
        int status = file_completed(self, (RecordCore *)args[0], name, ended);
        Py_DECREF(ended);
        if (status < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static int
record_filer_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    RecordFiler *self = (RecordFiler *)op;
    static char *keywords[] = {"slow", "live", "history", "clock", NULL};
    PyObject *slow, *live, *history, *clock;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OO:RecordFiler", keywords, &slow,
                                     &PyDict_Type, &live, &history, &clock)) {
        return -1;
    }
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->live, Py_NewRef(live));
    Py_XSETREF(self->history, Py_NewRef(history));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    self->vectorcall = record_filer_vectorcall;
    return 0;
}

static int
record_filer_traverse(PyObject *op, visitproc visit, void *arg)
{
    RecordFiler *self = (RecordFiler *)op;
    return visit_fields(OBJECT_FIELDS(RecordFiler, self, slow, clock), visit, arg);
}

static int
record_filer_clear(PyObject *op)
{
    RecordFiler *self = (RecordFiler *)op;
    clear_fields(OBJECT_FIELDS(RecordFiler, self, slow, clock));
    return 0;
}

static void
record_filer_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    record_filer_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject RecordFilerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.RecordFiler",
    .tp_doc = "task_finished(record, state, task, ended=None): Registry.task_finished's "
              "fast path for completed tasks.",
    .tp_basicsize = sizeof(RecordFiler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(RecordFiler, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = record_filer_init,
    .tp_traverse = record_filer_traverse,
    .tp_clear = record_filer_clear,
    .tp_dealloc = record_filer_dealloc,
};

/* ---------------------------------------------------------------- CreateTask */

/* create_task(loop, coro, *args, **kwargs), installed on the loop class on 3.12+: an
   eager task may run, or even finish, inside create_task without ever scheduling a step
   through call_soon, so a task the registry does not know when create_task returns is
   handed to `track_eager(task, coro, loop, frame, start)` (the Python wrapper's logic,
   AsyncioBackend._make_create_task; `frame` is the caller's). */
typedef struct {
    PyObject_HEAD
    PyObject *original;
    PyObject *clock;
    PyObject *live;
    PyObject *track_eager;
    PyObject *on_error;
    vectorcallfunc vectorcall;
} CreateTask;

static PyObject *msg_create_task;

static PyObject *
create_task_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CreateTask *self = (CreateTask *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    double start = read_clock(self->clock);
    if (start == -1.0 && PyErr_Occurred()) {
        report_internal_error(self->on_error, msg_create_task);
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    }
    last_recorded_task = NULL;
    PyObject *task = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    if (task == NULL || nargs < 2 || task == last_recorded_task) {
        return task; /* failed, or recorded as it scheduled its first step */
    }
    PyObject *key = PyLong_FromVoidPtr(task);
    int known = key == NULL ? -1 : PyDict_Contains(self->live, key);
    Py_XDECREF(key);
    if (known == 0) {
        PyObject *frame = (PyObject *)PyEval_GetFrame(); /* borrowed; NULL at top level */
        PyObject *started = PyFloat_FromDouble(start);
        PyObject *r = started == NULL ? NULL
                                      : PyObject_CallFunctionObjArgs(
                                            self->track_eager, task, args[1], args[0],
                                            frame == NULL ? Py_None : frame, started, NULL);
        Py_XDECREF(started);
        known = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    if (known < 0) {
        report_internal_error(self->on_error, msg_create_task); /* the task is returned */
    }
    return task;
}

static int
create_task_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    CreateTask *self = (CreateTask *)op;
    static char *keywords[] = {"original", "clock", "live", "track_eager", "on_error", NULL};
    PyObject *original, *clock, *live, *track_eager, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!OO:CreateTask", keywords, &original,
                                     &clock, &PyDict_Type, &live, &track_eager, &on_error)) {
        return -1;
    }
    Py_XSETREF(self->original, Py_NewRef(original));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->live, Py_NewRef(live));
    Py_XSETREF(self->track_eager, Py_NewRef(track_eager));
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    self->vectorcall = create_task_vectorcall;
    return 0;
}

static int
create_task_traverse(PyObject *op, visitproc visit, void *arg)
{
    CreateTask *self = (CreateTask *)op;
    return visit_fields(OBJECT_FIELDS(CreateTask, self, original, on_error), visit, arg);
}

static int
create_task_clear(PyObject *op)
{
    CreateTask *self = (CreateTask *)op;
    clear_fields(OBJECT_FIELDS(CreateTask, self, original, on_error));
    return 0;
}

static void
create_task_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    create_task_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject CreateTaskType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.CreateTask",
    .tp_doc = "create_task(loop, coro, *args, **kwargs), recording eager tasks (3.12+).",
    .tp_basicsize = sizeof(CreateTask),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(CreateTask, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_descr_get = bind_as_method,
    .tp_new = PyType_GenericNew,
    .tp_init = create_task_init,
    .tp_traverse = create_task_traverse,
    .tp_clear = create_task_clear,
    .tp_dealloc = create_task_dealloc,
};

/* ---------------------------------------------------------------- module */

static int
intern_all(void)
{
    static const InternedName names[] = {
        {&str_name, "__name__"},
        {&str_self, "__self__"},
        {&str_cr_frame, "cr_frame"},
        {&str_gi_frame, "gi_frame"},
        {&str_cr_await, "cr_await"},
        {&str_gi_yieldfrom, "gi_yieldfrom"},
        {&str_cancelled, "cancelled"},
        {&str_done, "done"},
        {&str_get_coro, "get_coro"},
        {&str_id, "id"},
        {&str_call, "call"},
        {&str_before, "before_task_step"},
        {&str_after, "after_task_step"},
        {&str_created, "task_created"},
        {&msg_call_soon, "asyncio backend: call_soon"},
        {&msg_step, "asyncio backend: step accounting"},
        {&msg_create_task, "asyncio backend: create_task"},
        {&empty_str, ""},
        {&str_cr_suspended, "cr_suspended"},
        {&str_coro, "_coro"},
        {&str_cr_code, "cr_code"},
        {&str_get_name, "get_name"},
        {&str_key, "key"},
        {&str_append, "append"},
        {&str_exception, "_exception"},
        {&str_finished_hook, "task_finished"},
        {&str_name_of, "name_of"},
    };
    return intern_names(names, sizeof(names) / sizeof(names[0]));
}

/* Keep time.perf_counter, and note whether it reads CLOCK_MONOTONIC. */
static int
find_perf_counter(void)
{
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return -1;
    }
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    PyObject *info = PyObject_CallMethod(time_module, "get_clock_info", "s", "perf_counter");
    Py_DECREF(time_module);
    if (perf_counter == NULL || info == NULL) {
        Py_XDECREF(info);
        return -1;
    }
#ifdef HAVE_DIRECT_CLOCK
    PyObject *implementation = PyObject_GetAttrString(info, "implementation");
    if (implementation == NULL) {
        Py_DECREF(info);
        return -1;
    }
    direct_perf_counter =
        PyUnicode_Check(implementation) &&
        PyUnicode_CompareWithASCIIString(implementation, "clock_gettime(CLOCK_MONOTONIC)") == 0;
    Py_DECREF(implementation);
#endif
    Py_DECREF(info);
    return 0;
}

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskscope._core._speedups",
    .m_doc = "The asyncio backend's per-step hot path in C (see _asyncio.py).",
    .m_size = -1,
    .m_methods = speedups_functions,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    empty_tuple = PyTuple_New(0);
    TaskRefType.tp_base = &_PyWeakref_RefType;
    if (empty_tuple == NULL || intern_all() < 0 || PyType_Ready(&RecordCoreType) < 0 ||
        PyType_Ready(&TaskRefType) < 0 ||
        PyType_Ready(&SiteCoreType) < 0 ||
        PyType_Ready(&TimedStepType) < 0 || PyType_Ready(&CallSoonType) < 0 ||
        PyType_Ready(&TaskRecorderType) < 0 || PyType_Ready(&TaskFinisherType) < 0 ||
        PyType_Ready(&CreateTaskType) < 0 || PyType_Ready(&RecordMakerType) < 0 ||
        PyType_Ready(&RecordFilerType) < 0) {
        return NULL;
    }
    if (find_perf_counter() < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "RecordCore", (PyObject *)&RecordCoreType) < 0 ||
        PyModule_AddObjectRef(module, "SiteCore", (PyObject *)&SiteCoreType) < 0 ||
        PyModule_AddObjectRef(module, "TimedStep", (PyObject *)&TimedStepType) < 0 ||
        PyModule_AddObjectRef(module, "CallSoon", (PyObject *)&CallSoonType) < 0 ||
        PyModule_AddObjectRef(module, "TaskRecorder", (PyObject *)&TaskRecorderType) < 0 ||
        PyModule_AddObjectRef(module, "TaskFinisher", (PyObject *)&TaskFinisherType) < 0 ||
        PyModule_AddObjectRef(module, "CreateTask", (PyObject *)&CreateTaskType) < 0 ||
        PyModule_AddObjectRef(module, "RecordMaker", (PyObject *)&RecordMakerType) < 0 ||
        PyModule_AddObjectRef(module, "RecordFiler", (PyObject *)&RecordFilerType) < 0 ||
        PyModule_AddObjectRef(module, "TaskRef", (PyObject *)&TaskRefType) < 0 ||
        PyModule_AddStringConstant(module, "FRAME_WALK", FRAME_WALK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
