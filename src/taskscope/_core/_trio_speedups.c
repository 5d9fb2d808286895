/* The trio backend's hot path in C: the instrument hooks run for every task and every
 * step, and the wrappers of Runner.reschedule and Runner.task_exited. The pure-Python
 * twin is taskscope/_backends/_trio.py (_TaskInstrument and TrioBackend._make_*), used
 * when this module is not built or TASKSCOPE_PURE_PYTHON is set
 * (taskscope/_core/_accel.py decides, once).
 *
 * Why: trio dispatches each hook through Instruments.call (a Python frame, a list copy,
 * a getattr and a try per call) before the instrument's own Python frame runs, three
 * times per task step. `Dispatch` replaces that `call` on one run's Instruments object
 * (an instance attribute; the class and every other run are untouched) and runs
 * taskscope's hooks directly when taskscope's instrument is the only one registered for
 * the hook; in every other case it hands the call to trio's own `call`, unchanged.
 *
 * Task records are read and written through the member descriptors of their per-step
 * fields (RecordCore's, given at construction), so this module does not depend on how
 * another module lays out a record. Everything rare (a new task, a task's end, the
 * longest step, taskscope's own instruments, internal errors) calls back into the
 * Python functions given at construction, so there is one implementation of each.
 *
 * Only the public C API is used (CPython 3.11-3.13), except for the walk to the line
 * that spawned a task (_cframes.h). Nothing here ever raises
 * into the run loop on its own account: a failure of taskscope's accounting is handed
 * to `on_error` (taskscope._core._faults.internal_error) and trio goes on exactly as
 * without taskscope.
 */
#include "_cshared.h"
#include "_cframes.h"
#include <stdint.h>

/* ---------------------------------------------------------------- names */

static PyObject *str_task_spawned, *str_before, *str_after, *str_call, *str_id,
    *str_outcome_known, *str_coro, *str_coro_attr, *str_cr_frame, *str_cr_code, *str_task, *str_created, *str_finished, *msg_spawned, *msg_before, *msg_after, *msg_scheduled, *msg_exited;
static PyObject *kwnames_outcome_known; /* ("outcome_known",) */

/* The per-step fields of a task record, in the order of `field_names`. */
enum { F_BUSY, F_SCHEDULED, F_SCHEDULED_AT, F_STEP_START, F_LONGEST, F_STEPS, F_WAITED_AT,
       F_FIRST_STEP, F_COUNT };
static const char *field_names[F_COUNT] = {"busy",         "scheduled", "scheduled_at",
                                           "step_start",   "longest_step", "steps",
                                           "waited_at",    "first_step"};

/* ---------------------------------------------------------------- Hooks */

#define LINE_CACHE_SIZE 64

typedef struct {
    PyObject_HEAD
    PyObject *live;        /* registry.live: id(task) -> record */
    PyObject *clock;       /* registry.clock */
    PyObject *instruments; /* taskscope's Instruments (a dict: hook -> methods) */
    PyObject *track;       /* backend.track(task, frame) */
    PyObject *end_step;    /* backend.end_step(record, task) */
    PyObject *finish;      /* backend.finish(record, task, outcome, *, outcome_known) */
    PyObject *on_error;    /* internal_error(where, exc) */
    PyObject *fields[F_COUNT]; /* member descriptors of the record's per-step fields */
    /* Creation (`TrioBackend.track` and `user_frame`, for the common case). */
    PyObject *kinds;        /* id(code) -> frame kind (`TrioBackend._frame_kinds`) */
    PyObject *classify;     /* classify(code) -> kind, caching it in `kinds` */
    PyObject *machinery;    /* frozenset of id() of trio's own task coroutines' code */
    PyObject *direct_codes; /* frozenset of codes that spawn the main task directly */
    PyObject *run_context;  /* trio's GLOBAL_RUN_CONTEXT (its .task is the running one) */
    PyObject *new_record;   /* registry.new_record */
    PyObject *record_class; /* TrioTaskRecord */
    /* Endings (`TrioBackend.finish`, for the common case). */
    PyObject *task_finished; /* registry.task_finished */
    PyObject *value_type;    /* outcome.Value */
    PyObject *completed;     /* the registry's COMPLETED state */
    /* Line numbers by (code, instruction offset): computing one scans the code's line
       table (~2,000 instructions), and tasks are spawned from few places. Each entry
       holds its code and line strongly, so a pointer is never reused while cached. */
    struct {
        PyObject *code;
        int lasti;
        PyObject *line;
    } lines[LINE_CACHE_SIZE];
    int enabled;
} Hooks;

/* Frame kinds of `TrioBackend.user_frame`. */
enum { K_USER = 0, K_LIBRARY = 1, K_ENTRY = 2 };

/* Call the clock; -1.0 with an exception set on failure. */
static double
read_clock(Hooks *self)
{
    PyObject *now = PyObject_CallNoArgs(self->clock);
    if (now == NULL) {
        return -1.0;
    }
    double value = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return value;
}

/* record.<field> as a new reference, through its descriptor. */
static PyObject *
get_field(Hooks *self, PyObject *record, int field)
{
    PyObject *descr = self->fields[field];
    return Py_TYPE(descr)->tp_descr_get(descr, record, (PyObject *)Py_TYPE(record));
}

/* record.<field> as a double; -1.0 with an exception set on failure. */
static double
get_double(Hooks *self, PyObject *record, int field)
{
    PyObject *value = get_field(self, record, field);
    if (value == NULL) {
        return -1.0;
    }
    double result = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return result;
}

static int
set_field(Hooks *self, PyObject *record, int field, PyObject *value)
{
    PyObject *descr = self->fields[field];
    return Py_TYPE(descr)->tp_descr_set(descr, record, value);
}

static int
set_double(Hooks *self, PyObject *record, int field, double value)
{
    PyObject *boxed = PyFloat_FromDouble(value);
    if (boxed == NULL) {
        return -1;
    }
    int status = set_field(self, record, field, boxed);
    Py_DECREF(boxed);
    return status;
}

/* The live record of `task` (borrowed), or NULL (with an exception set on failure). */
static PyObject *
live_record(Hooks *self, PyObject *task)
{
    if (!self->enabled) {
        return NULL;
    }
    PyObject *key = PyLong_FromVoidPtr(task);
    if (key == NULL) {
        return NULL;
    }
    PyObject *record = PyDict_GetItemWithError(self->live, key);
    Py_DECREF(key);
    return record;
}

/* getattr(obj, name) as a new reference in *result: 1 found, 0 AttributeError (cleared,
   *result NULL), -1 another failure. (PyObject_GetOptionalAttr is new in 3.13.) */
static int
get_optional(PyObject *obj, PyObject *name, PyObject **result)
{
    *result = PyObject_GetAttr(obj, name);
    if (*result != NULL) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* The kind of `code` (K_*), from the cache or `classify`; -1 with an exception set. */
static int
kind_of(Hooks *self, PyObject *code)
{
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        return -1;
    }
    PyObject *kind = PyDict_GetItemWithError(self->kinds, key);
    Py_DECREF(key);
    if (kind != NULL) {
        return (int)PyLong_AsLong(kind);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *computed = PyObject_CallOneArg(self->classify, code);
    if (computed == NULL) {
        return -1;
    }
    int result = (int)PyLong_AsLong(computed);
    Py_DECREF(computed);
    return result;
}

/* frame.f_lineno as a new reference, through the cache (keyed by the cursor's
   positions, which are not a frame object's: _cframes.h). */
static PyObject *
line_of(Hooks *self, const FrameCursor *frames, PyObject *code)
{
    int lasti = frames_lasti(frames);
    size_t slot = (((uintptr_t)code >> 4) ^ (size_t)lasti) % LINE_CACHE_SIZE;
    if (lasti >= 0 && self->lines[slot].code == code && self->lines[slot].lasti == lasti) {
        return Py_NewRef(self->lines[slot].line);
    }
    PyObject *line = PyLong_FromLong(frames_line(frames));
    if (line != NULL && lasti >= 0) {
        Py_XSETREF(self->lines[slot].code, Py_NewRef(code));
        Py_XSETREF(self->lines[slot].line, Py_NewRef(line));
        self->lines[slot].lasti = lasti;
    }
    return line;
}

/* `TrioBackend.user_frame` from the running frame: the user's (code, line) responsible
   for it, None when there is none, NULL with an exception set on failure. (`classify`,
   called for a code not seen before, runs on top of the frames walked, which are all
   running and so stay where they are.) */
static PyObject *
user_frame(Hooks *self)
{
    FrameCursor frames;
    frames_start(&frames);
    PyObject *previous = NULL; /* strong */
    PyObject *result = NULL;
    int depth = 0;
    while (!frames_done(&frames) && depth < 64) {
        PyObject *code = Py_NewRef(frames_code(&frames));
        int kind = kind_of(self, code);
        if (kind == -1 && PyErr_Occurred()) {
            Py_DECREF(code);
            goto done;
        }
        if (kind == K_USER) {
            PyObject *line = line_of(self, &frames, code);
            if (line != NULL) {
                result = PyTuple_Pack(2, code, line);
                Py_DECREF(line);
            }
            Py_DECREF(code);
            goto done;
        }
        if (kind == K_ENTRY) {
            int direct = previous == NULL ? 0 : PySet_Contains(self->direct_codes, previous);
            if (direct < 0) {
                Py_DECREF(code);
                goto done;
            }
            if (!direct) {
                Py_DECREF(code);
                result = Py_NewRef(Py_None);
                goto done;
            }
        }
        Py_XSETREF(previous, code);
        frames_back(&frames);
        depth++;
    }
    result = Py_NewRef(Py_None);
done:
    frames_stop(&frames);
    Py_XDECREF(previous);
    return result;
}

/* getattr(obj, name, None) for the referent scan, as a new reference in *result (NULL
   when absent): 1 found, 0 absent, -1 failure. PyObject_GetAttr would build (and format)
   an AttributeError for every miss, ~3,000 instructions; PyObject_HasAttr looks up
   without one. It also swallows other errors of a hostile __getattr__, which then read
   as "absent" (in Python they make the whole lookup give up). Atoms are skipped. */
static int
lookup(PyObject *obj, PyObject *name, PyObject **result)
{
    *result = NULL;
    if (obj == Py_None || PyUnicode_CheckExact(obj) || PyCode_Check(obj) ||
        PyTuple_CheckExact(obj) || PyLong_CheckExact(obj) || PyBytes_CheckExact(obj) ||
        PyFloat_CheckExact(obj) || PyBool_Check(obj)) {
        return 0; /* no such attribute on these exact types */
    }
    if (!PyObject_HasAttr(obj, name)) {
        return 0;
    }
    *result = PyObject_GetAttr(obj, name);
    if (*result != NULL) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* gc.get_referents(obj), in order, into `found` (a list). */
static int
collect_referent(PyObject *referent, void *found)
{
    return PyList_Append((PyObject *)found, referent);
}

/* `_compat.wrapped_coroutine_code(coro, is_library)`: the code of the user coroutine an
   unstarted library wrapper (AnyIO's `TaskHandle._run_coro`) will run, read from the
   wrapper's referents (its arguments: the coroutine, or an object whose `_coro` it is).
   A new reference, Py_None when there is none, NULL with an exception set. */
static PyObject *
wrapped_code(Hooks *self, PyObject *coro)
{
    PyObject *frame = NULL;
    if (get_optional(coro, str_cr_frame, &frame) < 0) {
        return NULL;
    }
    int started = frame != NULL && frame != Py_None;
    Py_XDECREF(frame);
    traverseproc traverse = Py_TYPE(coro)->tp_traverse;
    if (!started || !PyObject_IS_GC(coro) || traverse == NULL) {
        return Py_NewRef(Py_None);
    }
    PyObject *referents = PyList_New(0);
    if (referents == NULL) {
        return NULL;
    }
    if (traverse(coro, collect_referent, referents) != 0) {
        Py_DECREF(referents);
        return NULL;
    }
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(referents) && result == NULL; i++) {
        PyObject *candidates[2] = {PyList_GET_ITEM(referents, i), NULL};
        if (lookup(candidates[0], str_coro_attr, &candidates[1]) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                goto fail;
            }
            PyErr_Clear(); /* an argument with a hostile __getattr__ */
            continue;
        }
        for (int j = 0; j < 2 && result == NULL; j++) {
            PyObject *candidate = candidates[j] != NULL ? candidates[j] : Py_None;
            PyObject *code = NULL;
            if (lookup(candidate, str_cr_code, &code) < 0) {
                Py_XDECREF(candidates[1]);
                goto fail;
            }
            if (code != NULL && PyCode_Check(code) && candidate != coro) {
                int kind = kind_of(self, code);
                if (kind == -1 && PyErr_Occurred()) {
                    Py_DECREF(code);
                    Py_XDECREF(candidates[1]);
                    goto fail;
                }
                if (kind == K_USER) {
                    result = Py_NewRef(code);
                }
            }
            Py_XDECREF(code);
        }
        Py_XDECREF(candidates[1]);
    }
    Py_DECREF(referents);
    return result != NULL ? result : Py_NewRef(Py_None);
fail:
    Py_DECREF(referents);
    return NULL;
}

/* Record a new task (`TrioBackend.track`) when it is the common case: a coroutine
   (the program's, or a library wrapper of the program's) and no task_created listener. 1: recorded; 0: not the common
   case (nothing done); -1: failure, exception set. */
static int
track_common(Hooks *self, PyObject *task)
{
    int status = 0;
    PyObject *coro = NULL, *code = NULL, *key = NULL, *created_at = NULL, *parent = NULL,
             *parent_id = NULL;
    int listening = PyDict_Contains(self->instruments, str_created);
    if (listening != 0) {
        return listening < 0 ? -1 : 0;
    }
    coro = PyObject_GetAttr(task, str_coro);
    if (coro == NULL) {
        return -1;
    }
    if (get_optional(coro, str_cr_code, &code) < 0) {
        status = -1;
        goto done;
    }
    if (code == NULL || !PyCode_Check(code)) {
        goto done; /* not a coroutine: named after the object, in Python */
    }
    key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        status = -1;
        goto done;
    }
    int machinery = PySet_Contains(self->machinery, key);
    if (machinery != 0) {
        status = machinery < 0 ? -1 : 0;
        goto done;
    }
    int kind = kind_of(self, code);
    if (kind == -1 && PyErr_Occurred()) {
        status = -1;
        goto done;
    }
    if (kind != K_USER) {
        /* A library wrapper (AnyIO's): name the task after the coroutine it runs. */
        PyObject *wrapped = wrapped_code(self, coro);
        if (wrapped == NULL) {
            status = -1;
            goto done;
        }
        if (wrapped == Py_None) {
            Py_DECREF(wrapped);
        }
        else {
            Py_SETREF(code, wrapped);
        }
    }
    created_at = user_frame(self);
    if (created_at == NULL) {
        status = -1;
        goto done;
    }
    /* The running task; there is none while trio spawns its init task. */
    if (get_optional(self->run_context, str_task, &parent) < 0) {
        status = -1;
        goto done;
    }
    parent_id = Py_NewRef(Py_None);
    if (parent != NULL && parent != Py_None) {
        PyObject *parent_record = live_record(self, parent);
        if (parent_record == NULL && PyErr_Occurred()) {
            status = -1;
            goto done;
        }
        if (parent_record != NULL) {
            Py_SETREF(parent_id, PyObject_GetAttr(parent_record, str_id));
            if (parent_id == NULL) {
                status = -1;
                goto done;
            }
        }
    }
    PyObject *args[6] = {NULL, task, self->record_class, created_at, code, parent_id};
    PyObject *record = PyObject_Vectorcall(self->new_record, args + 1,
                                           5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (record == NULL) {
        status = -1;
        goto done;
    }
    Py_DECREF(record);
    status = 1;
done:
    Py_XDECREF(coro);
    Py_XDECREF(code);
    Py_XDECREF(key);
    Py_XDECREF(created_at);
    Py_XDECREF(parent);
    Py_XDECREF(parent_id);
    return status;
}

/* task_spawned: record the task and the user's line that spawned it. */
static void
hook_task_spawned(Hooks *self, PyObject *task)
{
    if (!self->enabled) {
        return;
    }
    /* The walk starts at the running Python frame: trio's spawn_impl (no `call` frame
       in between, which the walk to the user's line would look through anyway). */
    int status = track_common(self, task);
    if (status == 0) {
        PyFrameObject *frame = PyEval_GetFrame(); /* the slow path wants a frame object */
        PyObject *result = PyObject_CallFunctionObjArgs(
            self->track, task, frame ? (PyObject *)frame : Py_None, NULL);
        status = result == NULL ? -1 : 1;
        Py_XDECREF(result);
    }
    if (status < 0) {
        report_internal_error(self->on_error, msg_spawned);
    }
}

/* instruments.call(hook, record.id) when one of taskscope's instruments implements it. */
static int
call_instrument(Hooks *self, PyObject *hook, PyObject *record)
{
    int present = PyDict_Contains(self->instruments, hook);
    if (present <= 0) {
        return present;
    }
    PyObject *record_id = PyObject_GetAttr(record, str_id);
    if (record_id == NULL) {
        return -1;
    }
    PyObject *result =
        PyObject_CallMethodObjArgs(self->instruments, str_call, hook, record_id, NULL);
    Py_DECREF(record_id);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* before_task_step: start timing the step (`_TaskInstrument.before_task_step`). */
static int
before_step(Hooks *self, PyObject *record)
{
    if (call_instrument(self, str_before, record) < 0) {
        return -1;
    }
    double start = read_clock(self);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (set_double(self, record, F_STEP_START, start) < 0) {
        return -1;
    }
    double scheduled_at = get_double(self, record, F_SCHEDULED_AT);
    if (scheduled_at == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (scheduled_at != 0.0) {
        double scheduled = get_double(self, record, F_SCHEDULED);
        if ((scheduled == -1.0 && PyErr_Occurred()) ||
            set_double(self, record, F_SCHEDULED, scheduled + (start - scheduled_at)) < 0 ||
            set_double(self, record, F_SCHEDULED_AT, 0.0) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
hook_before_task_step(Hooks *self, PyObject *task)
{
    PyObject *record = live_record(self, task);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            report_internal_error(self->on_error, msg_before);
        }
        return;
    }
    Py_INCREF(record);
    if (before_step(self, record) < 0) {
        report_internal_error(self->on_error, msg_before);
    }
    Py_DECREF(record);
}

/* after_task_step: account the step (`_TaskInstrument.after_task_step`). */
static int
after_step(Hooks *self, PyObject *record, PyObject *task)
{
    double start = get_double(self, record, F_STEP_START);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (start == 0.0) {
        return 0; /* a finished task was accounted on exit */
    }
    double end = read_clock(self);
    if (end == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    double duration = end - start;
    double longest = get_double(self, record, F_LONGEST);
    if (longest == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *first = get_field(self, record, F_FIRST_STEP);
    if (first == NULL) {
        return -1;
    }
    int first_unset = first == Py_None;
    Py_DECREF(first);
    int slow = duration > longest || first_unset;
    if (!slow) {
        slow = PyDict_Contains(self->instruments, str_after);
        if (slow < 0) {
            return -1;
        }
    }
    if (slow) {
        PyObject *result = PyObject_CallFunctionObjArgs(self->end_step, record, task, NULL);
        if (result == NULL) {
            return -1;
        }
        Py_DECREF(result);
        return 0;
    }
    double busy = get_double(self, record, F_BUSY);
    if (busy == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *steps = get_field(self, record, F_STEPS);
    if (steps == NULL) {
        return -1;
    }
    Py_ssize_t count = PyLong_AsSsize_t(steps);
    Py_DECREF(steps);
    if (count == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *new_steps = PyLong_FromSsize_t(count + 1);
    if (new_steps == NULL) {
        return -1;
    }
    int status = set_field(self, record, F_STEPS, new_steps);
    Py_DECREF(new_steps);
    if (status < 0 || set_double(self, record, F_STEP_START, 0.0) < 0 ||
        set_double(self, record, F_BUSY, busy + duration) < 0) {
        return -1;
    }
    return 0;
}

static void
hook_after_task_step(Hooks *self, PyObject *task)
{
    PyObject *record = live_record(self, task);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            report_internal_error(self->on_error, msg_after);
        }
        return;
    }
    Py_INCREF(record);
    if (after_step(self, record, task) < 0) {
        report_internal_error(self->on_error, msg_after);
    }
    Py_DECREF(record);
}

/* After Runner.reschedule: note that the task became ready to run, and whether it had
   waited (`_TaskInstrument._note_scheduled`). */
static int
scheduled(Hooks *self, PyObject *record)
{
    double start = get_double(self, record, F_STEP_START);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (start == 0.0) {
        /* Woken from outside its own step: it waited for something. */
        PyObject *steps = get_field(self, record, F_STEPS);
        if (steps == NULL) {
            return -1;
        }
        int status = set_field(self, record, F_WAITED_AT, steps);
        Py_DECREF(steps);
        if (status < 0) {
            return -1;
        }
    }
    double now = read_clock(self);
    if (now == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return set_double(self, record, F_SCHEDULED_AT, now);
}

static void
note_scheduled(Hooks *self, PyObject *task)
{
    PyObject *record = live_record(self, task);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            report_internal_error(self->on_error, msg_scheduled);
        }
        return;
    }
    Py_INCREF(record);
    if (scheduled(self, record) < 0) {
        report_internal_error(self->on_error, msg_scheduled);
    }
    Py_DECREF(record);
}

/* Record a completed task's ending (`TrioBackend.finish` with a Value outcome, when no
   instrument listens): 1 done, 0 not the common case, -1 failure with an exception. */
static int
finish_completed(Hooks *self, PyObject *record, PyObject *task, PyObject *outcome)
{
    if (Py_TYPE(outcome) != (PyTypeObject *)self->value_type) {
        return 0;
    }
    int listening = PyDict_Contains(self->instruments, str_finished);
    if (listening == 0) {
        listening = PyDict_Contains(self->instruments, str_after);
    }
    if (listening != 0) {
        return listening < 0 ? -1 : 0;
    }
    double start = get_double(self, record, F_STEP_START);
    if (start == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *ended = NULL;
    if (start != 0.0) {
        /* `TrioBackend.end_step(final=True)`: the task's last step. */
        double end = read_clock(self);
        if (end == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        double duration = end - start;
        if (set_double(self, record, F_STEP_START, 0.0) < 0) {
            return -1;
        }
        double busy = get_double(self, record, F_BUSY);
        if ((busy == -1.0 && PyErr_Occurred()) ||
            set_double(self, record, F_BUSY, busy + duration) < 0) {
            return -1;
        }
        PyObject *steps = get_field(self, record, F_STEPS);
        if (steps == NULL) {
            return -1;
        }
        Py_ssize_t count = PyLong_AsSsize_t(steps);
        Py_DECREF(steps);
        if (count == -1 && PyErr_Occurred()) {
            return -1;
        }
        PyObject *new_steps = PyLong_FromSsize_t(count + 1);
        if (new_steps == NULL) {
            return -1;
        }
        int status = set_field(self, record, F_STEPS, new_steps);
        Py_DECREF(new_steps);
        if (status < 0) {
            return -1;
        }
        PyObject *first = get_field(self, record, F_FIRST_STEP);
        if (first == NULL) {
            return -1;
        }
        int first_unset = first == Py_None;
        Py_DECREF(first);
        if (first_unset && set_double(self, record, F_FIRST_STEP, start) < 0) {
            return -1;
        }
        double longest = get_double(self, record, F_LONGEST);
        if ((longest == -1.0 && PyErr_Occurred()) ||
            (duration > longest && set_double(self, record, F_LONGEST, duration) < 0)) {
            return -1;
        }
        /* The end of the last step is the task's end: one clock read fewer. */
        ended = PyFloat_FromDouble(end);
        if (ended == NULL) {
            return -1;
        }
    }
    PyObject *args[5] = {NULL, record, self->completed, task, ended ? ended : Py_None};
    PyObject *result = PyObject_Vectorcall(self->task_finished, args + 1,
                                           4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_XDECREF(ended);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 1;
}

/* Before Runner.task_exited: record the ending (`TrioBackend._make_task_exited`). */
static void
note_exited(Hooks *self, PyObject *task, PyObject *outcome)
{
    PyObject *record = live_record(self, task);
    if (record == NULL) {
        if (PyErr_Occurred()) {
            report_internal_error(self->on_error, msg_exited);
        }
        return;
    }
    Py_INCREF(record);
    int status = finish_completed(self, record, task, outcome);
    if (status == 0) {
        PyObject *args[5] = {NULL, record, task, outcome, Py_True};
        PyObject *result = PyObject_Vectorcall(self->finish, args + 1,
                                               3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                               kwnames_outcome_known);
        status = result == NULL ? -1 : 1;
        Py_XDECREF(result);
    }
    if (status < 0) {
        report_internal_error(self->on_error, msg_exited);
    }
    Py_DECREF(record);
}

static int
hooks_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    Hooks *self = (Hooks *)op;
    static char *keywords[] = {"live",         "clock",        "instruments",   "track",
                               "end_step",     "finish",       "on_error",      "record_type",
                               "kinds",        "classify",     "machinery",     "direct_codes",
                               "run_context",  "new_record",   "task_finished", "value_type",
                               "completed",    NULL};
    PyObject *live, *clock, *instruments, *track, *end_step, *finish, *on_error, *record_type,
        *kinds, *classify, *machinery, *direct_codes, *run_context, *new_record,
        *task_finished, *value_type, *completed;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "$O!OO!OOOOO!O!OO!O!OOOO!O!:Hooks", keywords, &PyDict_Type, &live,
            &clock, &PyDict_Type, &instruments, &track, &end_step, &finish, &on_error,
            &PyType_Type, &record_type, &PyDict_Type, &kinds, &classify, &PyFrozenSet_Type,
            &machinery, &PyFrozenSet_Type, &direct_codes, &run_context, &new_record,
            &task_finished, &PyType_Type, &value_type, &PyLong_Type, &completed)) {
        return -1;
    }
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(record_type, field_names[i]);
        if (descr == NULL) {
            return -1;
        }
        if (Py_TYPE(descr)->tp_descr_get == NULL || Py_TYPE(descr)->tp_descr_set == NULL) {
            PyErr_Format(PyExc_TypeError, "%R.%s is not a data descriptor", record_type,
                         field_names[i]);
            Py_DECREF(descr);
            return -1;
        }
        Py_XSETREF(self->fields[i], descr);
    }
    Py_XSETREF(self->live, Py_NewRef(live));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->instruments, Py_NewRef(instruments));
    Py_XSETREF(self->track, Py_NewRef(track));
    Py_XSETREF(self->end_step, Py_NewRef(end_step));
    Py_XSETREF(self->finish, Py_NewRef(finish));
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    Py_XSETREF(self->kinds, Py_NewRef(kinds));
    Py_XSETREF(self->classify, Py_NewRef(classify));
    Py_XSETREF(self->machinery, Py_NewRef(machinery));
    Py_XSETREF(self->direct_codes, Py_NewRef(direct_codes));
    Py_XSETREF(self->run_context, Py_NewRef(run_context));
    Py_XSETREF(self->new_record, Py_NewRef(new_record));
    Py_XSETREF(self->record_class, Py_NewRef(record_type));
    Py_XSETREF(self->task_finished, Py_NewRef(task_finished));
    Py_XSETREF(self->value_type, Py_NewRef(value_type));
    Py_XSETREF(self->completed, Py_NewRef(completed));
    self->enabled = 1;
    return 0;
}

static int
hooks_traverse(PyObject *op, visitproc visit, void *arg)
{
    Hooks *self = (Hooks *)op;
    Py_VISIT(self->live);
    Py_VISIT(self->clock);
    Py_VISIT(self->instruments);
    Py_VISIT(self->track);
    Py_VISIT(self->end_step);
    Py_VISIT(self->finish);
    Py_VISIT(self->on_error);
    Py_VISIT(self->kinds);
    Py_VISIT(self->classify);
    Py_VISIT(self->machinery);
    Py_VISIT(self->direct_codes);
    Py_VISIT(self->run_context);
    Py_VISIT(self->new_record);
    Py_VISIT(self->record_class);
    Py_VISIT(self->task_finished);
    Py_VISIT(self->value_type);
    Py_VISIT(self->completed);
    for (int i = 0; i < F_COUNT; i++) {
        Py_VISIT(self->fields[i]);
    }
    for (int i = 0; i < LINE_CACHE_SIZE; i++) {
        Py_VISIT(self->lines[i].code);
        Py_VISIT(self->lines[i].line);
    }
    return 0;
}

static int
hooks_clear(PyObject *op)
{
    Hooks *self = (Hooks *)op;
    self->enabled = 0;
    Py_CLEAR(self->live);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->instruments);
    Py_CLEAR(self->track);
    Py_CLEAR(self->end_step);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->kinds);
    Py_CLEAR(self->classify);
    Py_CLEAR(self->machinery);
    Py_CLEAR(self->direct_codes);
    Py_CLEAR(self->run_context);
    Py_CLEAR(self->new_record);
    Py_CLEAR(self->record_class);
    Py_CLEAR(self->task_finished);
    Py_CLEAR(self->value_type);
    Py_CLEAR(self->completed);
    for (int i = 0; i < F_COUNT; i++) {
        Py_CLEAR(self->fields[i]);
    }
    for (int i = 0; i < LINE_CACHE_SIZE; i++) {
        Py_CLEAR(self->lines[i].code);
        Py_CLEAR(self->lines[i].line);
    }
    return 0;
}

static void
hooks_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    hooks_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *
hooks_disable(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ((Hooks *)op)->enabled = 0;
    Py_RETURN_NONE;
}

/* The hooks, callable from Python (tests; the same code Dispatch runs). */
static PyObject *
hooks_task_spawned(PyObject *op, PyObject *task)
{
    hook_task_spawned((Hooks *)op, task);
    Py_RETURN_NONE;
}

static PyObject *
hooks_before_task_step(PyObject *op, PyObject *task)
{
    hook_before_task_step((Hooks *)op, task);
    Py_RETURN_NONE;
}

static PyObject *
hooks_after_task_step(PyObject *op, PyObject *task)
{
    hook_after_task_step((Hooks *)op, task);
    Py_RETURN_NONE;
}

static PyObject *
hooks_enabled(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((Hooks *)op)->enabled);
}

static PyMethodDef hooks_methods[] = {
    {"disable", hooks_disable, METH_NOARGS, "Turn every hook into a no-op."},
    {"task_spawned", hooks_task_spawned, METH_O, "Record a new task."},
    {"before_task_step", hooks_before_task_step, METH_O, "Start timing a step."},
    {"after_task_step", hooks_after_task_step, METH_O, "Account the step that just ran."},
    {NULL},
};

static PyGetSetDef hooks_getset[] = {
    {"enabled", hooks_enabled, NULL, "False once disabled.", NULL},
    {NULL},
};

static PyTypeObject HooksType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._trio_speedups.Hooks",
    .tp_doc = "Hooks(*, live, clock, instruments, track, end_step, finish, on_error, "
              "record_type, kinds, classify, machinery, direct_codes, run_context, "
              "new_record, task_finished, value_type, completed): taskscope's trio hooks.",
    .tp_basicsize = sizeof(Hooks),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = hooks_init,
    .tp_traverse = hooks_traverse,
    .tp_clear = hooks_clear,
    .tp_dealloc = hooks_dealloc,
    .tp_methods = hooks_methods,
    .tp_getset = hooks_getset,
};

/* ---------------------------------------------------------------- Dispatch */

typedef struct {
    PyObject_HEAD
    PyObject *hooks;      /* Hooks */
    PyObject *data;       /* trio's Instruments.data: hook name -> {instrument: None} */
    PyObject *instrument; /* taskscope's trio instrument */
    PyObject *original;   /* trio's Instruments.call, bound to the same object */
    vectorcallfunc vectorcall;
} Dispatch;

/* Which of taskscope's hooks `name` is: 0 spawned, 1 before, 2 after, -1 another. */
static int
hook_index(PyObject *name)
{
    /* trio's call sites pass string constants, interned like ours: compare pointers. */
    if (name == str_before) {
        return 1;
    }
    if (name == str_after) {
        return 2;
    }
    if (name == str_task_spawned) {
        return 0;
    }
    if (PyUnicode_CheckExact(name)) {
        if (PyUnicode_Compare(name, str_before) == 0) {
            return 1;
        }
        if (PyUnicode_Compare(name, str_after) == 0) {
            return 2;
        }
        if (PyUnicode_Compare(name, str_task_spawned) == 0) {
            return 0;
        }
        PyErr_Clear();
    }
    return -1;
}

/* call(hookname, *args): trio's Instruments.call, taking the short way when taskscope's
   instrument is the only one registered for the hook. */
static PyObject *
dispatch_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Dispatch *self = (Dispatch *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && kwnames == NULL) {
        int which = hook_index(args[0]);
        if (which >= 0) {
            PyObject *registered = PyDict_GetItemWithError(self->data, args[0]);
            if (registered != NULL && PyDict_CheckExact(registered) &&
                PyDict_GET_SIZE(registered) == 1) {
                int ours = PyDict_Contains(registered, self->instrument);
                if (ours == 1) {
                    Hooks *hooks = (Hooks *)self->hooks;
                    PyObject *task = args[1];
                    if (which == 1) {
                        hook_before_task_step(hooks, task);
                    }
                    else if (which == 2) {
                        hook_after_task_step(hooks, task);
                    }
                    else {
                        hook_task_spawned(hooks, task);
                    }
                    Py_RETURN_NONE;
                }
            }
            /* trio's own call below raises what it would have (a KeyError for a hook
               nobody registered); nothing of ours is left pending. */
            PyErr_Clear();
        }
    }
    return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
}

static int
dispatch_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    Dispatch *self = (Dispatch *)op;
    static char *keywords[] = {"hooks", "data", "instrument", "original", NULL};
    PyObject *hooks, *data, *instrument, *original;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OO:Dispatch", keywords, &HooksType,
                                     &hooks, &PyDict_Type, &data, &instrument, &original)) {
        return -1;
    }
    Py_XSETREF(self->hooks, Py_NewRef(hooks));
    Py_XSETREF(self->data, Py_NewRef(data));
    Py_XSETREF(self->instrument, Py_NewRef(instrument));
    Py_XSETREF(self->original, Py_NewRef(original));
    self->vectorcall = dispatch_vectorcall;
    return 0;
}

static int
dispatch_traverse(PyObject *op, visitproc visit, void *arg)
{
    Dispatch *self = (Dispatch *)op;
    return visit_fields(OBJECT_FIELDS(Dispatch, self, hooks, original), visit, arg);
}

static int
dispatch_clear(PyObject *op)
{
    Dispatch *self = (Dispatch *)op;
    clear_fields(OBJECT_FIELDS(Dispatch, self, hooks, original));
    return 0;
}

static void
dispatch_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    dispatch_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject DispatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._trio_speedups.Dispatch",
    .tp_doc = "Dispatch(*, hooks, data, instrument, original): trio's Instruments.call "
              "with a short way to taskscope's hooks.",
    .tp_basicsize = sizeof(Dispatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Dispatch, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_new = PyType_GenericNew,
    .tp_init = dispatch_init,
    .tp_traverse = dispatch_traverse,
    .tp_clear = dispatch_clear,
    .tp_dealloc = dispatch_dealloc,
};

/* ---------------------------------------------------------------- RunnerMethod */

/* A wrapper of a Runner method, set on the class: binds like a function. */
typedef struct {
    PyObject_HEAD
    PyObject *original; /* the Runner method (a function) */
    PyObject *hooks;    /* Hooks */
    int exited;         /* 0: reschedule(runner, task, ...); 1: task_exited(runner, task, o) */
    vectorcallfunc vectorcall;
} RunnerMethod;

static PyObject *
runner_method_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames)
{
    RunnerMethod *self = (RunnerMethod *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Hooks *hooks = (Hooks *)self->hooks;
    if (self->exited) {
        /* Recorded first: the original hands the outcome to the nursery and may raise
           (only for trio's own init task, which is not recorded). */
        if (nargs == 3 && kwnames == NULL) {
            note_exited(hooks, args[1], args[2]);
        }
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    }
    PyObject *result = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    if (result != NULL && nargs >= 2) {
        note_scheduled(hooks, args[1]);
    }
    return result;
}

static int
runner_method_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    RunnerMethod *self = (RunnerMethod *)op;
    static char *keywords[] = {"original", "hooks", "exited", NULL};
    PyObject *original, *hooks;
    int exited;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!p:RunnerMethod", keywords, &original,
                                     &HooksType, &hooks, &exited)) {
        return -1;
    }
    Py_XSETREF(self->original, Py_NewRef(original));
    Py_XSETREF(self->hooks, Py_NewRef(hooks));
    self->exited = exited;
    self->vectorcall = runner_method_vectorcall;
    return 0;
}

static int
runner_method_traverse(PyObject *op, visitproc visit, void *arg)
{
    RunnerMethod *self = (RunnerMethod *)op;
    return visit_fields(OBJECT_FIELDS(RunnerMethod, self, original, hooks), visit, arg);
}

static int
runner_method_clear(PyObject *op)
{
    RunnerMethod *self = (RunnerMethod *)op;
    clear_fields(OBJECT_FIELDS(RunnerMethod, self, original, hooks));
    return 0;
}

static void
runner_method_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    runner_method_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject RunnerMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "taskscope._core._trio_speedups.RunnerMethod",
    .tp_doc = "RunnerMethod(*, original, hooks, exited): Runner.reschedule or "
              "Runner.task_exited, noting the event for taskscope.",
    .tp_basicsize = sizeof(RunnerMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(RunnerMethod, vectorcall),
    .tp_call = call_via_vectorcall,
    .tp_descr_get = bind_as_method,
    .tp_new = PyType_GenericNew,
    .tp_init = runner_method_init,
    .tp_traverse = runner_method_traverse,
    .tp_clear = runner_method_clear,
    .tp_dealloc = runner_method_dealloc,
};

/* ---------------------------------------------------------------- module */

static int
intern_all(void)
{
    static const InternedName names[] = {
        {&str_task_spawned, "task_spawned"},
        {&str_before, "before_task_step"},
        {&str_after, "after_task_step"},
        {&str_call, "call"},
        {&str_id, "id"},
        {&str_outcome_known, "outcome_known"},
        {&str_coro, "coro"},
        {&str_coro_attr, "_coro"},
        {&str_cr_frame, "cr_frame"},
        {&str_cr_code, "cr_code"},
        {&str_task, "task"},
        {&str_created, "task_created"},
        {&str_finished, "task_finished"},
        {&msg_spawned, "trio backend: task_spawned"},
        {&msg_before, "trio backend: before_task_step"},
        {&msg_after, "trio backend: after_task_step"},
        {&msg_scheduled, "trio backend: task_scheduled"},
        {&msg_exited, "trio backend: task_exited"},
    };
    if (intern_names(names, sizeof(names) / sizeof(names[0])) < 0) {
        return -1;
    }
    kwnames_outcome_known = PyTuple_Pack(1, str_outcome_known);
    return kwnames_outcome_known == NULL ? -1 : 0;
}

static struct PyModuleDef trio_speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskscope._core._trio_speedups",
    .m_doc = "The trio backend's per-task and per-step hot path in C (see _trio.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__trio_speedups(void)
{
    if (intern_all() < 0 || PyType_Ready(&HooksType) < 0 || PyType_Ready(&DispatchType) < 0 ||
        PyType_Ready(&RunnerMethodType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&trio_speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Hooks", (PyObject *)&HooksType) < 0 ||
        PyModule_AddObjectRef(module, "Dispatch", (PyObject *)&DispatchType) < 0 ||
        PyModule_AddObjectRef(module, "RunnerMethod", (PyObject *)&RunnerMethodType) < 0 ||
        PyModule_AddStringConstant(module, "FRAME_WALK", FRAME_WALK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
