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
 * Only the stable public C API is used (CPython 3.11-3.13). Nothing here ever raises
 * into the event loop on its own account: a failure of taskscope's accounting is
 * handed to `on_error` (taskscope._core._faults.internal_error) and the step or the
 * call_soon goes on exactly as without taskscope.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

/* ---------------------------------------------------------------- RecordCore */

/* The fields of a task record written on every step (TaskRecord's base class; the
   pure-Python twin is taskscope._core._accel.RecordCore). Read and written here by
   offset; Python code sees them as ordinary attributes. */
typedef struct {
    PyObject_HEAD
    double busy;
    double scheduled;
    double scheduled_at;
    double step_start;
    double longest_step;
    Py_ssize_t steps;
    Py_ssize_t waited_at;
    PyObject *first_step; /* None or a float */
} RecordCore;

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
    {"first_step", T_OBJECT, offsetof(RecordCore, first_step), 0,
     "Clock reading of the first step, or None."},
    {NULL},
};

static PyObject *
record_core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    RecordCore *self = (RecordCore *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->first_step = Py_NewRef(Py_None);
    }
    return (PyObject *)self;
}

static void
record_core_dealloc(PyObject *op)
{
    Py_CLEAR(((RecordCore *)op)->first_step);
    Py_TYPE(op)->tp_free(op);
}

/* No GC support of its own: its fields hold floats and None, which cannot form a
   cycle; subclasses with slots or a __dict__ get it from Python as usual. */
static PyTypeObject RecordCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.RecordCore",
    .tp_doc = "The per-step fields of a task record.",
    .tp_basicsize = sizeof(RecordCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = record_core_new,
    .tp_dealloc = record_core_dealloc,
    .tp_members = record_core_members,
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
static PyObject *str_name, *str_self, *str_cancel_cause, *str_cancelled, *str_done,
    *str_get_coro, *str_id, *str_call, *str_before, *str_after, *str_created, *msg_call_soon,
    *msg_step;

/* Hand the current exception to on_error(where, exc) and clear it. */
static void
report_internal_error(PyObject *on_error, PyObject *where)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    if (value != NULL) {
        PyObject *result = PyObject_CallFunctionObjArgs(on_error, where, value, NULL);
        Py_XDECREF(result);
        PyErr_Clear(); /* a failing logger must not reach the loop either */
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

/* Call the clock; -1.0 with an exception set on failure. */
static double
read_clock(PyObject *clock)
{
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

/* ---------------------------------------------------------------- TimedStep */

typedef struct {
    PyObject_HEAD
    PyObject *clock;
    PyObject *instruments;
    PyObject *finish;
    PyObject *first_step;
    PyObject *note_suspension;
    PyObject *on_error;
    vectorcallfunc vectorcall;
} TimedStep;

/* Account a step that ran from `start` to `end` (the Python version's `account`). */
static int
account_step(TimedStep *self, PyObject *record, RecordCore *core, PyObject *task, double start,
             double end)
{
    double duration = end - start;
    core->busy += duration;
    core->steps += 1;

    PyObject *done_result = PyObject_CallMethodNoArgs(task, str_done);
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
        int wanted = done ? PyDict_Contains(self->instruments, str_created) : 1;
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
            PyObject *coro = PyObject_CallMethodNoArgs(task, str_get_coro);
            if (coro == NULL) {
                return -1;
            }
            PyObject *r = PyObject_CallFunctionObjArgs(self->note_suspension, record, coro, NULL);
            Py_DECREF(coro);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    }
    if (done) {
        PyObject *ended = PyFloat_FromDouble(end);
        if (ended == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallFunctionObjArgs(self->finish, record, task, ended, NULL);
        Py_DECREF(ended);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    int after = PyDict_Contains(self->instruments, str_after);
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
    static char *keywords[] = {"clock", "instruments", "finish", "first_step", "note_suspension",
                               "on_error", NULL};
    PyObject *clock, *instruments, *finish, *first_step, *note_suspension, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OOOO:TimedStep", keywords, &clock,
                                     &PyDict_Type, &instruments, &finish, &first_step,
                                     &note_suspension, &on_error)) {
        return -1;
    }
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
    Py_VISIT(self->clock);
    Py_VISIT(self->instruments);
    Py_VISIT(self->finish);
    Py_VISIT(self->first_step);
    Py_VISIT(self->note_suspension);
    Py_VISIT(self->on_error);
    return 0;
}

static int
timed_step_clear(PyObject *op)
{
    TimedStep *self = (TimedStep *)op;
    Py_CLEAR(self->clock);
    Py_CLEAR(self->instruments);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->first_step);
    Py_CLEAR(self->note_suspension);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
timed_step_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    timed_step_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
timed_step_call(PyObject *op, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(op, args, kwargs);
}

static PyTypeObject TimedStepType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.TimedStep",
    .tp_doc = "timed_step(record, task, callback, *args): run and time one task step.",
    .tp_basicsize = sizeof(TimedStep),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(TimedStep, vectorcall),
    .tp_call = timed_step_call,
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
    PyObject *task = PyObject_GetAttr(callback, str_self);
    if (task == NULL) {
        return NULL;
    }
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
    PyObject *cause = PyObject_GetAttr(record, str_cancel_cause);
    if (cause == NULL) {
        return -1;
    }
    int unexplained = cause == Py_None;
    Py_DECREF(cause);
    if (!unexplained) {
        return 0;
    }
    /* A wakeup with a cancelled future delivers a cancellation. */
    PyObject *cancelled = PyObject_CallMethodNoArgs(rest[0], str_cancelled);
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
    Py_VISIT(self->original);
    Py_VISIT(self->live);
    Py_VISIT(self->kinds);
    Py_VISIT(self->classify);
    Py_VISIT(self->step_names);
    Py_VISIT(self->timed_step);
    Py_VISIT(self->discover);
    Py_VISIT(self->note_cancel);
    Py_VISIT(self->clock);
    Py_VISIT(self->on_error);
    return 0;
}

static int
call_soon_clear(PyObject *op)
{
    CallSoon *self = (CallSoon *)op;
    Py_CLEAR(self->original);
    Py_CLEAR(self->live);
    Py_CLEAR(self->kinds);
    Py_CLEAR(self->classify);
    Py_CLEAR(self->step_names);
    Py_CLEAR(self->timed_step);
    Py_CLEAR(self->discover);
    Py_CLEAR(self->note_cancel);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
call_soon_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    call_soon_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
call_soon_call(PyObject *op, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(op, args, kwargs);
}

/* Bind like a function when found on a loop class: loop.call_soon(...). */
static PyObject *
call_soon_get(PyObject *op, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

static PyTypeObject CallSoonType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._speedups.CallSoon",
    .tp_doc = "call_soon(loop, callback, *args, context=None), routing task steps "
              "through the timed step trampoline.",
    .tp_basicsize = sizeof(CallSoon),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(CallSoon, vectorcall),
    .tp_call = call_soon_call,
    .tp_descr_get = call_soon_get,
    .tp_new = PyType_GenericNew,
    .tp_init = call_soon_init,
    .tp_traverse = call_soon_traverse,
    .tp_clear = call_soon_clear,
    .tp_dealloc = call_soon_dealloc,
};

/* ---------------------------------------------------------------- module */

static int
intern_all(void)
{
    struct {
        PyObject **target;
        const char *text;
    } names[] = {
        {&str_name, "__name__"},
        {&str_self, "__self__"},
        {&str_cancel_cause, "cancel_cause"},
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
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].target = PyUnicode_InternFromString(names[i].text);
        if (*names[i].target == NULL) {
            return -1;
        }
    }
    return 0;
}

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskscope._core._speedups",
    .m_doc = "The asyncio backend's per-step hot path in C (see _asyncio.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_all() < 0 || PyType_Ready(&RecordCoreType) < 0 ||
        PyType_Ready(&TimedStepType) < 0 || PyType_Ready(&CallSoonType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "RecordCore", (PyObject *)&RecordCoreType) < 0 ||
        PyModule_AddObjectRef(module, "TimedStep", (PyObject *)&TimedStepType) < 0 ||
        PyModule_AddObjectRef(module, "CallSoon", (PyObject *)&CallSoonType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
