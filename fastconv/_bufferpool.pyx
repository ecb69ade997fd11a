# cython: language_level=3
"""A numpy memory handler that keeps freed large blocks for the next array.

Why: a fresh large array is page-faulted in by the kernel on first touch.
On virtual machines (this project's benchmark machines among them) a fresh
32 MiB output was measured to cost up to 7x the convolution itself for the
first calls of a process (huge pages backed lazily by the host), and about
half the kernel time even in steady state.  Outputs of the same size come
back call after call, so keeping a few freed blocks and handing them out
again removes both costs.

numpy lets a library install its own allocator for the arrays created
while it is the current handler (``PyDataMem_SetHandler``, numpy >= 1.22);
each array remembers the handler that allocated it and frees through it,
so an output made here returns its block to the pool when the caller drops
it, whenever and on whatever thread that happens.

Every block carries a 64-byte header holding its capacity, so ``realloc``
and ``free`` know a pooled block from a plain one without the caller's
size.  Blocks below ``threshold`` bytes pass straight to malloc; larger
ones are rounded up to 2 MiB, kept after free while the pool holds fewer
than ``max_bytes`` bytes (the oldest goes first), and reused by best fit.
"""
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset, strncpy

cimport numpy as cnp

cdef extern from "Python.h":
    ctypedef void *PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock() nogil
    int PyThread_acquire_lock(PyThread_type_lock, int) nogil
    void PyThread_release_lock(PyThread_type_lock) nogil

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "sys/mman.h" nogil:
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(PyObject *handler)


cnp.import_array()

DEF HEADER = 64          # keeps the data 64-byte aligned
DEF GRAIN = 2097152      # pooled capacities round up to a huge page
DEF SLOTS = 32           # most blocks the pool keeps

cdef PyThread_type_lock _lock = PyThread_allocate_lock()
cdef void *_slot_base[SLOTS]
cdef size_t _slot_capacity[SLOTS]
cdef int _slot_count = 0
cdef size_t _held_bytes = 0
cdef size_t _threshold = 1048576
cdef size_t _max_bytes = 268435456
cdef size_t _reused = 0
cdef size_t _fresh = 0


cdef inline size_t _capacity(void *data) noexcept nogil:
    return (<size_t *>(<char *>data - HEADER))[0]


cdef inline bint _pooled(void *data) noexcept nogil:
    return (<size_t *>(<char *>data - HEADER))[1] != 0


cdef inline void *_stamp(void *base, size_t capacity, bint pooled) noexcept nogil:
    if base == NULL:
        return NULL
    (<size_t *>base)[0] = capacity
    (<size_t *>base)[1] = pooled
    return <char *>base + HEADER


cdef void *_remove(int index) noexcept nogil:
    """Take slot ``index`` out of the pool (lock held), keeping the others in age order."""
    global _slot_count, _held_bytes
    cdef void *base = _slot_base[index]
    cdef int i
    _held_bytes -= _slot_capacity[index]
    _slot_count -= 1
    for i in range(index, _slot_count):
        _slot_base[i] = _slot_base[i + 1]
        _slot_capacity[i] = _slot_capacity[i + 1]
    return base


cdef void *_take(size_t size) noexcept nogil:
    """A pooled block of at least ``size`` bytes (not zeroed), or NULL."""
    global _reused, _fresh
    cdef size_t capacity = (size + GRAIN - 1) // GRAIN * GRAIN
    cdef size_t limit = capacity + capacity // 2
    cdef int best = -1, i
    cdef void *base = NULL
    PyThread_acquire_lock(_lock, 1)
    for i in range(_slot_count):
        if capacity <= _slot_capacity[i] <= limit and (
                best < 0 or _slot_capacity[i] < _slot_capacity[best]):
            best = i
    if best >= 0:
        capacity = _slot_capacity[best]
        base = _remove(best)
        _reused += 1
    else:
        _fresh += 1
    PyThread_release_lock(_lock)
    if base != NULL:
        return _stamp(base, capacity, True)
    if posix_memalign(&base, GRAIN, capacity + HEADER) != 0:
        return NULL
    madvise(base, capacity + HEADER, MADV_HUGEPAGE)  # as numpy does for large arrays
    return _stamp(base, capacity, True)


cdef void _give_back(void *data) noexcept nogil:
    """Keep a pooled block for reuse, or release it (the oldest blocks go first)."""
    global _slot_count, _held_bytes
    cdef void *base = <char *>data - HEADER
    cdef size_t capacity = _capacity(data)
    cdef void *evict[SLOTS]
    cdef int n_evict = 0, i
    PyThread_acquire_lock(_lock, 1)
    if capacity > _max_bytes:
        evict[n_evict] = base
        n_evict += 1
    else:
        while _slot_count > 0 and (_slot_count == SLOTS or _held_bytes + capacity > _max_bytes):
            evict[n_evict] = _remove(0)
            n_evict += 1
        _slot_base[_slot_count] = base
        _slot_capacity[_slot_count] = capacity
        _slot_count += 1
        _held_bytes += capacity
    PyThread_release_lock(_lock)
    for i in range(n_evict):
        free(evict[i])


cdef void *_malloc(void *ctx, size_t size) noexcept nogil:
    if size >= _threshold:
        return _take(size)
    return _stamp(malloc(size + HEADER), size, False)


cdef void *_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size
    cdef void *data
    if elsize != 0 and nelem > (<size_t>-1 - GRAIN - HEADER) // elsize:
        return NULL
    size = nelem * elsize
    data = _malloc(ctx, size)
    if data != NULL:
        memset(data, 0, size)
    return data


cdef void _free(void *ctx, void *data, size_t size) noexcept nogil:
    if data == NULL:
        return
    if _pooled(data):
        _give_back(data)
    else:
        free(<char *>data - HEADER)


cdef void *_realloc(void *ctx, void *data, size_t new_size) noexcept nogil:
    cdef size_t old
    cdef void *moved
    if data == NULL:
        return _malloc(ctx, new_size)
    old = _capacity(data)
    if not _pooled(data) and new_size < _threshold:
        return _stamp(realloc(<char *>data - HEADER, new_size + HEADER), new_size, False)
    if _pooled(data) and old >= new_size and new_size >= _threshold:
        return data
    moved = _malloc(ctx, new_size)
    if moved != NULL:
        memcpy(moved, data, new_size if new_size < old else old)
        _free(ctx, data, 0)
    return moved


cdef PyDataMem_Handler _handler
strncpy(_handler.name, b"fastconv_buffer_pool", 127)
_handler.version = 1
_handler.allocator.ctx = NULL
_handler.allocator.malloc = _malloc
_handler.allocator.calloc = _calloc
_handler.allocator.realloc = _realloc
_handler.allocator.free = _free

#: the capsule numpy's PyDataMem_SetHandler takes
HANDLER = PyCapsule_New(&_handler, "mem_handler", NULL)


def set_handler(handler):
    """Make ``handler`` (a capsule, or None for numpy's default) current; return the previous."""
    return PyDataMem_SetHandler(NULL if handler is None else <PyObject *>handler)


def configure(threshold=None, max_bytes=None):
    """Set the smallest pooled block and the most bytes the pool keeps; release the excess."""
    global _threshold, _max_bytes
    if threshold is not None:
        _threshold = max(<size_t>1, <size_t>threshold)
    if max_bytes is not None:
        _max_bytes = <size_t>max_bytes
        trim(_max_bytes)


def trim(size_t keep=0):
    """Release pooled blocks until at most ``keep`` bytes stay held."""
    cdef void *base
    while True:
        with nogil:
            PyThread_acquire_lock(_lock, 1)
            base = _remove(0) if _slot_count > 0 and _held_bytes > keep else NULL
            PyThread_release_lock(_lock)
        if base == NULL:
            return
        free(base)


def stats():
    """Blocks and bytes held now, blocks reused and freshly allocated so far, settings."""
    return {"blocks": _slot_count, "held_bytes": _held_bytes, "reused": _reused,
            "fresh": _fresh, "threshold": _threshold, "max_bytes": _max_bytes}
