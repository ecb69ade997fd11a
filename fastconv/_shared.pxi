# What the Cython kernels share, through ``include`` (each extension module holds its
# own copy): BLAS ?gemm bound at run time from the routines scipy exports (set by the
# module's ``load_blas()``), and the atomic counter from which worker threads take units
# of work.  Needs the fused type ``scalar`` defined before the include.

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

ctypedef void (*sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*,
                         float*, float*, int*) noexcept nogil
ctypedef void (*dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*,
                         double*, double*, int*) noexcept nogil
ctypedef void (*cgemm_t)(char*, char*, int*, int*, int*, float complex*, float complex*, int*,
                         float complex*, int*, float complex*, float complex*, int*) noexcept nogil
ctypedef void (*zgemm_t)(char*, char*, int*, int*, int*, double complex*, double complex*, int*,
                         double complex*, int*, double complex*, double complex*,
                         int*) noexcept nogil

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL
cdef cgemm_t _cgemm = NULL
cdef zgemm_t _zgemm = NULL

#: largest BLAS dimension (the LP64 interface takes C ints)
BLAS_MAX_DIM = 2**31 - 1


cdef void* _capsule_pointer(capsule) except NULL:
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


def load_blas():
    """Bind the BLAS ``?gemm`` routines that scipy exports (idempotent).

    scipy.linalg.cython_blas publishes them as capsules, so nothing of
    scipy is needed at build time.  Importing scipy.linalg takes a while,
    hence not at module import.

    Examples
    --------
    >>> load_blas()
    """
    global _sgemm, _dgemm, _cgemm, _zgemm
    if _zgemm != NULL:
        return
    from scipy.linalg import cython_blas
    capi = cython_blas.__pyx_capi__
    _sgemm = <sgemm_t>_capsule_pointer(capi["sgemm"])
    _dgemm = <dgemm_t>_capsule_pointer(capi["dgemm"])
    _cgemm = <cgemm_t>_capsule_pointer(capi["cgemm"])
    _zgemm = <zgemm_t>_capsule_pointer(capi["zgemm"])


cdef inline void _gemm(char transa, int m, int n, int k, const scalar* a, int lda, const scalar* b,
                       int ldb, bint accumulate, scalar* c, int ldc,
                       char no=b'N') noexcept nogil:
    """Column-major C (m x n) (+)= op(A) op(B), op(A) = A or A^T (m x k), op(B) (k x n)
    likewise (``no``: B's transposition, plain by default)."""
    cdef scalar alpha = 1
    cdef scalar beta = 1 if accumulate else 0
    if scalar is float:
        _sgemm(&transa, &no, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    elif scalar is double:
        _dgemm(&transa, &no, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb, &beta, c,
               &ldc)
    elif scalar is cython.floatcomplex:
        _cgemm(&transa, &no, &m, &n, &k, &alpha, <float complex*>a, &lda, <float complex*>b, &ldb,
               &beta, c, &ldc)
    else:
        _zgemm(&transa, &no, &m, &n, &k, &alpha, <double complex*>a, &lda, <double complex*>b,
               &ldb, &beta, c, &ldc)


# the next unit of work for a worker thread: units are 0, 1, 2... in the order taken
cdef extern from *:
    """
    static inline Py_ssize_t fastconv_take(Py_ssize_t *counter) {
        return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    }
    """
    Py_ssize_t fastconv_take(Py_ssize_t* counter) noexcept nogil
