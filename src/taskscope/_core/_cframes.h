/* Walking the running thread's Python frames without creating frame objects.
 *
 * Finding the line that created a task means walking from the running frame to the
 * first frame of the user's code. PyEval_GetFrame and PyFrame_GetBack hand out frame
 * objects, and since CPython 3.11 a frame object is created on demand, for every frame
 * visited that has none yet: a GC-tracked allocation, freed again when that frame
 * returns. `asyncio.create_task` and trio's `spawn_impl` are Python functions, so every
 * new task got one to three fresh frame objects (measured: ~1,500 instructions per task
 * on the asyncio spawn workload, plus the garbage collections the extra allocations
 * trigger).
 *
 * On CPython 3.11-3.13 the walk reads the interpreter's own frame records instead
 * (internal/pycore_frame.h, the way greenlet and Cython do): borrowed pointers, no
 * allocation. Their layout changes between versions, so this is the only file that
 * touches it, and any other version (or TASKSCOPE_PUBLIC_FRAMES defined at build time)
 * uses the public frame-object API with the same results. `FRAME_WALK` names the one
 * built in; tests compare both against sys._getframe.
 *
 * The cursor is only valid while the frames it walks are running: use it within one C
 * call, never across a call back into Python.
 */
#ifndef TASKSCOPE_CFRAMES_H
#define TASKSCOPE_CFRAMES_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 &&                     \
    !defined(TASKSCOPE_PUBLIC_FRAMES) && !defined(Py_LIMITED_API)
#define TASKSCOPE_INTERPRETER_FRAMES 1
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#define FRAME_WALK "interpreter frames"
#else
#define TASKSCOPE_INTERPRETER_FRAMES 0
#define FRAME_WALK "frame objects"
#endif

#if TASKSCOPE_INTERPRETER_FRAMES

typedef struct {
    _PyInterpreterFrame *frame; /* borrowed, NULL past the outermost frame */
} FrameCursor;

/* The frame's code object (borrowed; only frames running one are visited). */
static inline PyObject *
frame_code(_PyInterpreterFrame *frame)
{
#if PY_VERSION_HEX >= 0x030D0000
    return frame->f_executable;
#else
    return (PyObject *)frame->f_code;
#endif
}

/* Frames still being set up, 3.12+'s C-stack shims and anything not running a code
   object are skipped, as PyFrame_GetBack and sys._getframe skip them. */
static inline _PyInterpreterFrame *
complete_frame(_PyInterpreterFrame *frame)
{
    while (frame != NULL && (_PyFrame_IsIncomplete(frame) || !PyCode_Check(frame_code(frame)))) {
        frame = frame->previous;
    }
    return frame;
}

/* Start at the running Python frame. */
static inline void
frames_start(FrameCursor *cursor)
{
    PyThreadState *state = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    cursor->frame = complete_frame(state->current_frame);
#else
    cursor->frame = complete_frame(state->cframe->current_frame);
#endif
}

static inline int
frames_done(const FrameCursor *cursor)
{
    return cursor->frame == NULL;
}

/* The frame's code object (borrowed). */
static inline PyObject *
frames_code(const FrameCursor *cursor)
{
    return frame_code(cursor->frame);
}

/* The position in the code: equal positions give equal values (a cache key). */
static inline int
frames_lasti(const FrameCursor *cursor)
{
    return _PyInterpreterFrame_LASTI(cursor->frame);
}

/* The line the frame is at (frame.f_lineno). */
static inline int
frames_line(const FrameCursor *cursor)
{
    return PyCode_Addr2Line((PyCodeObject *)frames_code(cursor),
                            frames_lasti(cursor) * (int)sizeof(_Py_CODEUNIT));
}

static inline void
frames_back(FrameCursor *cursor)
{
    cursor->frame = complete_frame(cursor->frame->previous);
}

static inline void
frames_stop(FrameCursor *cursor)
{
    cursor->frame = NULL;
}

#else /* the public frame-object API */

typedef struct {
    PyFrameObject *frame; /* strong, NULL past the outermost frame */
} FrameCursor;

static inline void
frames_start(FrameCursor *cursor)
{
    cursor->frame = (PyFrameObject *)Py_XNewRef(PyEval_GetFrame());
}

static inline int
frames_done(const FrameCursor *cursor)
{
    return cursor->frame == NULL;
}

static inline PyObject *
frames_code(const FrameCursor *cursor)
{
    PyCodeObject *code = PyFrame_GetCode(cursor->frame);
    Py_DECREF(code); /* the frame keeps it alive */
    return (PyObject *)code;
}

static inline int
frames_lasti(const FrameCursor *cursor)
{
    return PyFrame_GetLasti(cursor->frame);
}

static inline int
frames_line(const FrameCursor *cursor)
{
    return PyFrame_GetLineNumber(cursor->frame);
}

static inline void
frames_back(FrameCursor *cursor)
{
    Py_SETREF(cursor->frame, PyFrame_GetBack(cursor->frame));
}

static inline void
frames_stop(FrameCursor *cursor)
{
    Py_CLEAR(cursor->frame);
}

#endif

#endif /* TASKSCOPE_CFRAMES_H */
