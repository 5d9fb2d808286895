/* Direct calls of C methods on the hot path (_speedups.c).
 *
 * PyObject_CallMethodNoArgs(task, "done") looks "done" up on the type's MRO (the type
 * method cache, then the descriptor), binds, and calls through two vectorcall layers:
 * about 200 instructions for a method whose own work is a dozen. The spawn workload
 * makes five such calls per task (done, get_name, cancelled, deque.append, ...).
 *
 * For an instance of an immutable type (every static C type, and heap types created
 * with Py_TPFLAGS_IMMUTABLETYPE: asyncio's C Task, collections.deque) with the generic
 * attribute lookup, the method found on the type cannot be replaced, so its C function
 * can be remembered once and called directly, as long as the instance has no __dict__
 * entries that could shadow it (a C Task has a __dict__ slot, almost always empty; it
 * is checked on every call). Anything else (another type, a Python subclass, a method
 * whose calling convention is not the expected one) takes the generic call, which is
 * always correct.
 *
 * Uses _PyType_Lookup (CPython's non-limited API, exported in 3.11-3.13). */
#ifndef TASKSCOPE_CMETHODS_H
#define TASKSCOPE_CMETHODS_H

#include "_cshared.h"

/* 3.13's asyncio Task keeps its __dict__ as a "managed dict" (no tp_dictoffset). Where
   the interpreter's internal headers are in use (as in _cframes.h), its pointer is read
   the interpreter's way; elsewhere such types get the generic call. */
#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) && \
    !defined(TASKSCOPE_PUBLIC_FRAMES) && !defined(Py_LIMITED_API)
#define Py_BUILD_CORE 1
#include <internal/pycore_object.h>
#undef Py_BUILD_CORE
#define TASKSCOPE_MANAGED_DICTS 1
#else
#define TASKSCOPE_MANAGED_DICTS 0
#endif

/* The instance __dict__ of `obj` (borrowed, possibly NULL), for a type accepted by
   resolve_method. */
static inline PyObject *
instance_dict(PyObject *obj, PyTypeObject *type)
{
#if TASKSCOPE_MANAGED_DICTS
    if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
        return (PyObject *)_PyObject_GetManagedDict(obj);
    }
#endif
    if (type->tp_dictoffset > 0) {
        return *(PyObject **)((char *)obj + type->tp_dictoffset);
    }
    return NULL;
}

/* 1 when resolve_method can tell whether instances of `type` have attributes. */
static inline int
dict_readable(PyTypeObject *type)
{
    if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
#if TASKSCOPE_MANAGED_DICTS
        /* Attributes kept as inline values rather than in a dict: not handled. */
        return !PyType_HasFeature(type, Py_TPFLAGS_INLINE_VALUES);
#else
        return 0;
#endif
    }
    return type->tp_dictoffset >= 0; /* negative: variable-size instances */
}

/* How a remembered method is called. */
enum { GENERIC_CALL = 0, PLAIN_CALL, DEFINING_CLASS_CALL };

/* One call site's memory: the first type seen there and its method's C function. */
typedef struct {
    PyTypeObject *type;   /* strong reference; NULL until the first call */
    PyCFunction function; /* a METH_NOARGS or METH_O function, or a PyCMethod */
    PyTypeObject *defining_class; /* for a PyCMethod (3.13's asyncio Future methods) */
    int kind;                     /* GENERIC_CALL: `type` gets the generic call */
} DirectMethod;

#define DEFINING_CLASS_FLAGS (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

/* Remember at `site` how to call `type`'s `name` directly (see above), if it can be;
   `flags` is the plain calling convention expected (METH_NOARGS or METH_O). */
static inline void
resolve_method(DirectMethod *site, PyTypeObject *type, PyObject *name, int flags)
{
    site->type = (PyTypeObject *)Py_NewRef((PyObject *)type);
    if (!PyType_HasFeature(type, Py_TPFLAGS_IMMUTABLETYPE) || !dict_readable(type) ||
        type->tp_getattro != PyObject_GenericGetAttr) {
        return;
    }
    PyObject *descr = _PyType_Lookup(type, name); /* borrowed, no exception set */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        return;
    }
    PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
    int convention = def->ml_flags & ~METH_COEXIST;
    if (convention == flags) {
        site->kind = PLAIN_CALL;
    }
    else if (convention == DEFINING_CLASS_FLAGS) {
        site->kind = DEFINING_CLASS_CALL;
        site->defining_class = ((PyMethodDescrObject *)descr)->d_common.d_type;
        Py_INCREF(site->defining_class);
    }
    else {
        return;
    }
    site->function = def->ml_meth;
}

/* How to call `obj`'s `name` at `site`: GENERIC_CALL, PLAIN_CALL or
   DEFINING_CLASS_CALL. */
static inline int
direct_kind(DirectMethod *site, PyObject *obj, PyObject *name, int flags)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type != site->type) {
        if (site->type != NULL) {
            return GENERIC_CALL; /* a second type at this site */
        }
        resolve_method(site, type, name, flags);
    }
    if (site->kind != GENERIC_CALL) {
        PyObject *dict = instance_dict(obj, type);
        if (dict != NULL && PyDict_GET_SIZE(dict) > 0) {
            return GENERIC_CALL; /* an instance attribute may shadow the method */
        }
    }
    return site->kind;
}

/* obj.name() for a method without arguments. New reference, NULL with an exception. */
static inline PyObject *
call_method_noargs(DirectMethod *site, PyObject *obj, PyObject *name)
{
    switch (direct_kind(site, obj, name, METH_NOARGS)) {
    case PLAIN_CALL:
        return site->function(obj, NULL);
    case DEFINING_CLASS_CALL:
        return ((PyCMethod)(void (*)(void))site->function)(obj, site->defining_class, NULL, 0,
                                                           NULL);
    default:
        return PyObject_CallMethodNoArgs(obj, name);
    }
}

/* obj.name(arg) for a method of one argument. New reference, NULL with an exception. */
static inline PyObject *
call_method_onearg(DirectMethod *site, PyObject *obj, PyObject *name, PyObject *arg)
{
    switch (direct_kind(site, obj, name, METH_O)) {
    case PLAIN_CALL:
        return site->function(obj, arg);
    case DEFINING_CLASS_CALL:
        return ((PyCMethod)(void (*)(void))site->function)(obj, site->defining_class, &arg, 1,
                                                           NULL);
    default:
        return PyObject_CallMethodOneArg(obj, name, arg);
    }
}

#endif
