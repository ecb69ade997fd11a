# cython: language_level=3
"""Streaming (non-temporal) copies for compiled loops that write large outputs.

Why: an ordinary store first reads the destination's cache line into the
cache (a read for ownership), so writing a large output moves it through
memory twice, and evicts data the writer still needs.  Non-temporal stores
write whole lines straight to memory.  The FFT backend's fused tile loop
writes each tile's valid outputs with them when the output is large: a
32 MiB result of a 2048x2048 convolution took 2.4 ms of the loop's time
with ordinary copies and 1.0 ms streamed (2 threads, this project's
benchmark machine), and the loop as a whole ran 12 % faster.

The functions are called through their addresses (:func:`copy_address`,
:func:`fence_address`), as ``void f(intptr, intptr, intptr)``, from Numba
code.  Without SSE2 (non-x86 machines) the copy is a plain ``memcpy``.
"""

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif

    /* Copy nbytes from src to dst, streaming every aligned 16-byte block of dst. */
    static void fastconv_stream_copy(Py_ssize_t dst, Py_ssize_t src, Py_ssize_t nbytes) {
        char *d = (char *)dst;
        const char *s = (const char *)src;
    #if defined(__SSE2__)
        Py_ssize_t head = (Py_ssize_t)((16 - ((uintptr_t)d & 15)) & 15);
        if (head > nbytes) head = nbytes;
        memcpy(d, s, (size_t)head);
        d += head; s += head; nbytes -= head;
        for (; nbytes >= 64; nbytes -= 64, d += 64, s += 64) {
            _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
            _mm_stream_si128((__m128i *)(d + 16), _mm_loadu_si128((const __m128i *)(s + 16)));
            _mm_stream_si128((__m128i *)(d + 32), _mm_loadu_si128((const __m128i *)(s + 32)));
            _mm_stream_si128((__m128i *)(d + 48), _mm_loadu_si128((const __m128i *)(s + 48)));
        }
        for (; nbytes >= 16; nbytes -= 16, d += 16, s += 16)
            _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    #endif
        memcpy(d, s, (size_t)nbytes);
    }

    /* Order the streamed stores before any later store (call once a loop is done). */
    static void fastconv_stream_fence(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) {
        (void)a; (void)b; (void)c;
    #if defined(__SSE2__)
        _mm_sfence();
    #endif
    }
    """
    void fastconv_stream_copy(Py_ssize_t dst, Py_ssize_t src, Py_ssize_t nbytes) nogil
    void fastconv_stream_fence(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) nogil


def copy_address():
    """Address of ``void copy(dst, src, nbytes)``: a copy with non-temporal stores.

    Examples
    --------
    >>> copy_address() > 0
    True
    """
    return <Py_ssize_t>&fastconv_stream_copy


def fence_address():
    """Address of ``void fence(0, 0, 0)``: the store fence that ends a run of streamed copies.

    Examples
    --------
    >>> fence_address() > 0
    True
    """
    return <Py_ssize_t>&fastconv_stream_fence
