/* Helpers shared by taskscope's C accelerators (_speedups.c, _trio_speedups.c,
 * _lock_speedups.c): each includes this header; everything in it is static inline.
 * Public C API only (CPython 3.11-3.13). */
#ifndef TASKSCOPE_CSHARED_H
#define TASKSCOPE_CSHARED_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* Hand the current exception to on_error(where, exc) and clear it: taskscope's own
   failures are logged (taskscope._core._faults.internal_error), never raised into the
   program. */
static inline void
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
    }
    PyErr_Clear(); /* a failing logger must not reach the program either */
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

/* tp_call of the types that implement vectorcall. */
static inline PyObject *
call_via_vectorcall(PyObject *op, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(op, args, kwargs);
}

/* tp_descr_get of the wrappers installed on a class in place of a method (the loop's
   call_soon, trio's Runner methods): bind like a function, obj.method(...). */
static inline PyObject *
bind_as_method(PyObject *op, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

/* The object fields of a struct from `first` to `last` (declared one after the other),
   for the traverse and clear functions of the types below. */
#define OBJECT_FIELDS(type, self, first, last)                                             \
    (&(self)->first),                                                                      \
        ((offsetof(type, last) - offsetof(type, first)) / sizeof(PyObject *) + 1)

static inline int
visit_fields(PyObject **fields, size_t count, visitproc visit, void *arg)
{
    for (size_t i = 0; i < count; i++) {
        Py_VISIT(fields[i]);
    }
    return 0;
}

static inline void
clear_fields(PyObject **fields, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        Py_CLEAR(fields[i]);
    }
}

/* Interned strings created once at module import. */
typedef struct {
    PyObject **target;
    const char *text;
} InternedName;

static inline int
intern_names(const InternedName *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        *names[i].target = PyUnicode_InternFromString(names[i].text);
        if (*names[i].target == NULL) {
            return -1;
        }
    }
    return 0;
}

#endif /* TASKSCOPE_CSHARED_H */
