/* pagerfs.zircon._gather: the kernel model's one copy of a read, without the GIL.
 *
 * zx_vmo_read returns a new buffer holding the VMO's pages, which the model keeps as
 * immutable views of the bytes pagers supplied. Joining the views of a 1 MiB FUSE READ
 * is a 1 MiB copy; with b"".join it holds the GIL throughout, so the pager threads
 * cannot run Python meanwhile. Here the copy runs with the GIL released: the views stay
 * exported (their bytes cannot go away or change, see ranges.as_view) until it is done.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Below this a GIL hand-off costs more than the copy (a random 4 KiB read's page). */
#define RELEASE_AT (64 * 1024)

static void
copy_all(char *dst, const Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(dst, views[i].buf, views[i].len);
        dst += views[i].len;
    }
}

PyDoc_STRVAR(gather_doc,
"gather(pieces) -> bytes\n\n"
"b\"\".join(pieces) for a sequence of bytes-like objects; from 64 KiB on, the copy\n"
"runs without the GIL.");

static PyObject *
gather(PyObject *self, PyObject *pieces)
{
    PyObject *seq = PySequence_Fast(pieces, "gather() takes a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0, total = 0;
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    PyObject *out = NULL;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (views[got].len > PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_OverflowError, "gather() result too long");
            got++;
            goto done;
        }
        total += views[got].len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    if (total < RELEASE_AT) {
        copy_all(PyBytes_AS_STRING(out), views, n);
    } else {
        Py_BEGIN_ALLOW_THREADS
        copy_all(PyBytes_AS_STRING(out), views, n);
        Py_END_ALLOW_THREADS
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"gather", gather, METH_O, gather_doc},
    {NULL, NULL, 0, NULL},
};

#ifndef PAGERFS_SOURCE_DIGEST  /* setup.py defines it: the SHA-256 of this file */
#define PAGERFS_SOURCE_DIGEST ""
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pagerfs.zircon._gather",
    "The kernel model's read copy, without the GIL.", -1, methods,
};

PyMODINIT_FUNC
PyInit__gather(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCE_DIGEST", PAGERFS_SOURCE_DIGEST) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
