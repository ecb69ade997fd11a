# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of the im2col backend: lowering, its adjoint, layout moves, GEMM.

All loops are serial and run without the GIL; all geometry is 3-d, a 1-d or
2-d problem being passed with size-1 axes (kernel 1, stride 1, dilation 1,
padding 0 there).  Zero padding comes from the index arithmetic: no padded
copy of the input is ever made.  One fused type covers float32, float64,
complex64 and complex128.

Columns layout (``im2col`` / ``col2im``, the classic one, used by the
gradient code and as the backend's fallback): ``x`` is ``(N, C, D, H, W)``;
the column matrix has one row per (channel, kd, kh, kw) tap, channel-major,
so the rows of one channel group are contiguous, and one column per (image,
output position), image-major.  A block is ``nb`` images from ``b0`` and,
inside each image, the flattened output positions ``p0 .. p0 + npos``: whole
images, or a slice of a single one (how one huge image fits the workspace).

Rows layout (``to_channels_last``, ``im2row``, ``gemm_rows``,
``rows_to_output``, ``columns_to_output``): see the section below.
"""
cimport cython
from libc.string cimport memcpy, memset

ctypedef fused scalar:
    float
    double
    float complex
    double complex


cdef struct Geometry:
    # input, kernel, stride, dilation, padding-before, output; each (d, h, w)
    Py_ssize_t n[3]
    Py_ssize_t k[3]
    Py_ssize_t s[3]
    Py_ssize_t dil[3]
    Py_ssize_t pad[3]
    Py_ssize_t out[3]


cdef Geometry _geometry(spatial, kernel, stride, dilation, pad, out) except *:
    cdef Geometry g
    cdef int i
    if not (len(spatial) == len(kernel) == len(stride) == len(dilation) == len(pad)
            == len(out) == 3):
        raise ValueError("geometry tuples must all have 3 entries (d, h, w)")
    for i in range(3):
        g.n[i] = spatial[i]
        g.k[i] = kernel[i]
        g.s[i] = stride[i]
        g.dil[i] = dilation[i]
        g.pad[i] = pad[i]
        g.out[i] = out[i]
        if g.k[i] < 1 or g.s[i] < 1 or g.dil[i] < 1 or g.out[i] < 0 or g.n[i] < 0:
            raise ValueError("kernel, stride and dilation must be positive")
    return g


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a (C division truncates)."""
    if a <= 0:
        return -((-a) // b)
    return (a + b - 1) // b


cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


cdef inline void _valid_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                              Py_ssize_t first, Py_ssize_t last,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs o in [first, last) whose input o*stride + offset lies in [0, size)."""
    lo[0] = _clamp(_ceil_div(-offset, stride), first, last)
    hi[0] = _clamp(_ceil_div(size - offset, stride), lo[0], last)


cdef void _im2col_row(const scalar* x, scalar* dst, Py_ssize_t image_stride,
                      Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t npos,
                      Py_ssize_t td, Py_ssize_t th, Py_ssize_t tw,
                      const Geometry* g) noexcept nogil:
    """Fill one row of the column matrix: tap (td, th, tw) of one channel.

    ``x`` points at that channel's plane in the first image of the block.
    """
    cdef Py_ssize_t b, p, end, seg, row, ow0, od, oh, idd, ih, iw0, lo, hi, o
    cdef Py_ssize_t W = g.n[2], HW = g.n[1] * g.n[2]
    cdef Py_ssize_t OW = g.out[2], OH = g.out[1], sw = g.s[2]
    cdef const scalar* src
    iw0 = tw * g.dil[2] - g.pad[2]
    for b in range(nb):
        p = p0
        end = p0 + npos
        while p < end:
            row = p // OW
            ow0 = p - row * OW
            seg = OW - ow0
            if seg > end - p:
                seg = end - p
            od = row // OH
            oh = row - od * OH
            idd = od * g.s[0] + td * g.dil[0] - g.pad[0]
            ih = oh * g.s[1] + th * g.dil[1] - g.pad[1]
            if idd < 0 or idd >= g.n[0] or ih < 0 or ih >= g.n[1]:
                for o in range(seg):
                    dst[o] = 0
            else:
                _valid_range(iw0, sw, W, ow0, ow0 + seg, &lo, &hi)
                src = x + b * image_stride + idd * HW + ih * W + iw0
                for o in range(ow0, lo):
                    dst[o - ow0] = 0
                if sw == 1:
                    for o in range(lo, hi):
                        dst[o - ow0] = src[o]
                else:
                    for o in range(lo, hi):
                        dst[o - ow0] = src[o * sw]
                for o in range(hi, ow0 + seg):
                    dst[o - ow0] = 0
            dst += seg
            p += seg


cdef void _col2im_row(const scalar* src, scalar* x, Py_ssize_t image_stride,
                      Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t npos,
                      Py_ssize_t td, Py_ssize_t th, Py_ssize_t tw,
                      const Geometry* g) noexcept nogil:
    """Add one row of the column matrix back into its channel's plane (adjoint)."""
    cdef Py_ssize_t b, p, end, seg, row, ow0, od, oh, idd, ih, iw0, lo, hi, o
    cdef Py_ssize_t W = g.n[2], HW = g.n[1] * g.n[2]
    cdef Py_ssize_t OW = g.out[2], OH = g.out[1], sw = g.s[2]
    cdef scalar* dst
    iw0 = tw * g.dil[2] - g.pad[2]
    for b in range(nb):
        p = p0
        end = p0 + npos
        while p < end:
            row = p // OW
            ow0 = p - row * OW
            seg = OW - ow0
            if seg > end - p:
                seg = end - p
            od = row // OH
            oh = row - od * OH
            idd = od * g.s[0] + td * g.dil[0] - g.pad[0]
            ih = oh * g.s[1] + th * g.dil[1] - g.pad[1]
            if 0 <= idd < g.n[0] and 0 <= ih < g.n[1]:
                _valid_range(iw0, sw, W, ow0, ow0 + seg, &lo, &hi)
                dst = x + b * image_stride + idd * HW + ih * W + iw0
                if sw == 1:
                    for o in range(lo, hi):
                        dst[o] += src[o - ow0]
                else:
                    for o in range(lo, hi):
                        dst[o * sw] += src[o - ow0]
            src += seg
            p += seg


cdef void _im2col(const scalar* x, scalar* cols, Py_ssize_t channels, Py_ssize_t ncols,
                  Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t npos,
                  const Geometry* g) noexcept nogil:
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2]
    cdef Py_ssize_t plane = g.n[0] * g.n[1] * g.n[2]
    cdef Py_ssize_t r, c, t, td, th, tw
    # one row per task: rows are disjoint, so threads never share a cache line
    for r in range(channels * taps):
        c = r // taps
        t = r - c * taps
        td = t // (g.k[1] * g.k[2])
        th = (t // g.k[2]) % g.k[1]
        tw = t % g.k[2]
        _im2col_row(x + c * plane, cols + r * ncols, channels * plane,
                    nb, p0, npos, td, th, tw, g)


cdef void _col2im(const scalar* cols, scalar* x, Py_ssize_t channels, Py_ssize_t ncols,
                  Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t npos,
                  const Geometry* g) noexcept nogil:
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2]
    cdef Py_ssize_t plane = g.n[0] * g.n[1] * g.n[2]
    cdef Py_ssize_t c, t, td, th, tw
    # one channel per task: the taps of a channel overlap in x, channels do not
    for c in range(channels):
        for t in range(taps):
            td = t // (g.k[1] * g.k[2])
            th = (t // g.k[2]) % g.k[1]
            tw = t % g.k[2]
            _col2im_row(cols + (c * taps + t) * ncols, x + c * plane, channels * plane,
                        nb, p0, npos, td, th, tw, g)


cdef int _check_shapes(Py_ssize_t* xshape, Py_ssize_t* cshape, Py_ssize_t b0, Py_ssize_t nb,
                       Py_ssize_t p0, Py_ssize_t npos, const Geometry* g) except -1:
    cdef Py_ssize_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2]
    if b0 < 0 or nb < 0 or b0 + nb > xshape[0]:
        raise ValueError(f"image block [{b0}, {b0 + nb}) outside the batch of {xshape[0]}")
    if p0 < 0 or npos < 0 or p0 + npos > positions or (nb > 1 and npos != positions):
        raise ValueError(f"position block [{p0}, {p0 + npos}) invalid for {positions} outputs "
                         f"and {nb} images (several images need whole images)")
    if cshape[0] != xshape[1] * taps or cshape[1] != nb * npos:
        raise ValueError(f"cols has shape ({cshape[0]}, {cshape[1]}), expected "
                         f"({xshape[1] * taps}, {nb * npos})")
    return 0


def im2col(const scalar[:, :, :, :, ::1] x, scalar[:, ::1] cols, kernel, stride, dilation,
           pad, out_spatial, Py_ssize_t b0=0, Py_ssize_t nb=-1, Py_ssize_t p0=0,
           Py_ssize_t npos=-1):
    """Write the column matrix of a block of ``x`` into ``cols``.

    Parameters
    ----------
    x : ndarray, (N, C, D, H, W), C-contiguous
        Unpadded input; 1-d and 2-d inputs get leading size-1 axes.
    cols : ndarray, (C * kd * kh * kw, nb * npos), C-contiguous, same dtype
        Overwritten.  Row ``c * K + tap`` (taps in C order), column
        ``i * npos + (p - p0)`` for image ``b0 + i`` and flattened output
        position ``p``.
    kernel, stride, dilation, pad, out_spatial : 3-tuples of int
        ``pad`` is the padding before each axis (the padding after only
        shows through ``out_spatial``).
    b0, nb : int
        First image and number of images (``nb=-1``: to the end).
    p0, npos : int
        First flattened output position and count (``npos=-1``: to the end);
        a partial range needs ``nb == 1``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(4.0).reshape(1, 1, 1, 1, 4)
    >>> cols = np.empty((2, 3))
    >>> _ = im2col(x, cols, (1, 1, 2), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 3))
    >>> cols
    array([[0., 1., 2.],
           [1., 2., 3.]])
    """
    cdef Geometry g = _geometry((x.shape[2], x.shape[3], x.shape[4]), kernel, stride, dilation,
                                pad, out_spatial)
    cdef Py_ssize_t positions = g.out[0] * g.out[1] * g.out[2]
    nb = x.shape[0] - b0 if nb < 0 else nb
    npos = positions - p0 if npos < 0 else npos
    _check_shapes(x.shape, cols.shape, b0, nb, p0, npos, &g)
    if cols.shape[0] == 0 or cols.shape[1] == 0:
        return cols.base
    with nogil:
        _im2col(&x[b0, 0, 0, 0, 0], &cols[0, 0], x.shape[1], cols.shape[1],
                nb, p0, npos, &g)
    return cols.base


def col2im(const scalar[:, ::1] cols, scalar[:, :, :, :, ::1] x, kernel, stride, dilation,
           pad, out_spatial, Py_ssize_t b0=0, Py_ssize_t nb=-1, Py_ssize_t p0=0,
           Py_ssize_t npos=-1):
    """Add a column matrix back into ``x`` (the adjoint of :func:`im2col`).

    Same arguments as :func:`im2col`; ``x`` is accumulated into, not
    overwritten, so zero it first for a plain adjoint.  Columns that came
    from padding are dropped.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((1, 1, 1, 1, 4))
    >>> cols = np.ones((2, 3))
    >>> _ = col2im(cols, x, (1, 1, 2), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 3))
    >>> x.ravel()
    array([1., 2., 2., 1.])
    """
    cdef Geometry g = _geometry((x.shape[2], x.shape[3], x.shape[4]), kernel, stride, dilation,
                                pad, out_spatial)
    cdef Py_ssize_t positions = g.out[0] * g.out[1] * g.out[2]
    nb = x.shape[0] - b0 if nb < 0 else nb
    npos = positions - p0 if npos < 0 else npos
    _check_shapes(x.shape, cols.shape, b0, nb, p0, npos, &g)
    if cols.shape[0] == 0 or cols.shape[1] == 0:
        return x.base
    with nogil:
        _col2im(&cols[0, 0], &x[b0, 0, 0, 0, 0], x.shape[1], cols.shape[1],
                nb, p0, npos, &g)
    return x.base


# ============================================================== channels-last path
#
# The backend's fast path works on a channels-last copy of a slab of the
# input, ``xt`` of shape (A, nb, H2, W2, C): A is the first spatial axis,
# (H2, W2) the others (size 1 where the problem has fewer), the block's nb
# images sit between A and the rest.  ``im2row`` writes one *row* per output
# position, ordered (a, image, h2, w2), holding that position's receptive
# field in (group, ka, kh, kw, channel-in-group) order: for one group the
# (kw, channel) taps are contiguous in ``xt``, so a row is a few long memcpys.
# A shift by whole A-rows of the row matrix is the next kernel tap along A,
# which lets the backend skip expanding the A axis (see gemm_rows).  BLAS is
# called directly (scipy's exported ?gemm), with the GIL released, writing
# either a channels-last result (rows_to_output moves it into ``out``) or
# straight into ``out``'s (O, positions) layout (columns_to_output when the
# block holds several images).

include "_shared.pxi"


def gemm_rows(const scalar[:, ::1] rows, const scalar[:, :, :, ::1] w, scalar[:, :] out,
              Py_ssize_t m, Py_ssize_t shift, bint channels_last=True):
    """Sum over taps ``t`` of the row matrix shifted by ``t * shift`` rows, times weights.

    With ``channels_last`` (weights ``w`` of shape (T, G, Kg, Og)):
    ``out[j, g*Og + o] = sum_t sum_k rows[t*shift + j, g*Kg + k] * w[t, g, k, o]``;
    without it (``w`` of shape (T, G, Og, Kg)) ``out`` is the transpose,
    ``out[g*Og + o, j]``.  One GEMM per tap and group, the taps accumulating
    in BLAS (beta = 1), so ``t`` walks the kernel along A.

    In BLAS's column-major terms the channels-last result is
    ``(O x m) = W^T R^T`` with the small dimension O first: for O <= 64
    OpenBLAS runs that 5-20 % faster than the other orientation, which in
    exchange leaves ``out`` in the layout of the problem's output.

    Parameters
    ----------
    rows : ndarray, (R, G * Kg)
        Row matrix from :func:`im2row`; needs ``R >= (T - 1) * shift + m``.
    w : ndarray, (T, G, Kg, Og) or (T, G, Og, Kg)
        Weights per A-tap and group, taps in the row matrix's order.
    out : ndarray, (>= m, G * Og) or (G * Og, >= m)
        Overwritten in its first ``m`` rows (columns); rows may be strided.
    m, shift : int
        Output positions, and the row offset from one tap to the next.
    channels_last : bool
        Which of the two layouts above.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> rows = np.arange(6.0).reshape(3, 2)
    >>> out = np.empty((2, 1))
    >>> _ = gemm_rows(rows, np.ones((2, 1, 2, 1)), out, 2, 1)
    >>> out.ravel()  # row j + row j+1, summed
    array([ 6., 14.])
    """
    cdef Py_ssize_t taps = w.shape[0], groups = w.shape[1]
    cdef Py_ssize_t kg = w.shape[2] if channels_last else w.shape[3]
    cdef Py_ssize_t og = w.shape[3] if channels_last else w.shape[2]
    cdef Py_ssize_t positions = out.shape[0] if channels_last else out.shape[1]
    cdef Py_ssize_t channels = out.shape[1] if channels_last else out.shape[0]
    cdef Py_ssize_t t, gi, ldc = out.strides[0] // sizeof(scalar), lda, ldr = rows.shape[1]
    if _zgemm == NULL:
        raise RuntimeError("call load_blas() first")
    if ldr != groups * kg or channels != groups * og:
        raise ValueError(f"rows ({rows.shape[0]}, {ldr}), weights ({taps}, {groups}, "
                         f"{w.shape[2]}, {w.shape[3]}) and out ({out.shape[0]}, {out.shape[1]}) "
                         "do not match")
    if out.shape[1] > 1 and out.strides[1] != sizeof(scalar):
        raise ValueError("out must be contiguous along its rows")
    if out.shape[0] == 1:
        ldc = out.shape[1]
    elif ldc * <Py_ssize_t>sizeof(scalar) != out.strides[0] or ldc < out.shape[1]:
        raise ValueError("out's rows must be a whole number of elements apart, not overlapping")
    if m < 0 or shift < 0 or positions < m or (m > 0 and (taps - 1) * shift + m > rows.shape[0]):
        raise ValueError(f"m={m} and shift={shift} run past rows or out")
    if max(m, og, kg, ldr, ldc) > BLAS_MAX_DIM:
        raise OverflowError("matrix dimension too large for the BLAS interface")
    if m == 0 or og == 0 or groups == 0:
        return
    if taps == 0 or kg == 0:
        if channels_last:
            out[:m, :] = 0
        else:
            out[:, :m] = 0
        return
    ldc = max(ldc, 1)
    cdef char plain = b'N', transposed = b'T'
    with nogil:
        for t in range(taps):
            for gi in range(groups):
                if channels_last:  # (Og x m) = W_g^T (Og x Kg) R^T (Kg x m)
                    _gemm(plain, <int>og, <int>m, <int>kg, &w[t, gi, 0, 0], <int>og,
                          &rows[t * shift, gi * kg], <int>ldr, t > 0, &out[0, gi * og], <int>ldc)
                else:  # (m x Og) = R (m x Kg) W_g^T (Kg x Og)
                    _gemm(transposed, <int>m, <int>og, <int>kg, &rows[t * shift, gi * kg], <int>ldr,
                          &w[t, gi, 0, 0], <int>kg, t > 0, &out[gi * og, 0], <int>ldc)


cdef enum:
    TILE = 32  # transpose tile edge: 32 x 32 doubles fill 8 KiB of each cache side


cdef inline void _transpose4(const scalar* s, Py_ssize_t ss, scalar* d,
                             Py_ssize_t ds) noexcept nogil:
    """A 4 x 4 block through registers: four loads of each source row, then stores."""
    cdef scalar a0 = s[0], a1 = s[1], a2 = s[2], a3 = s[3]
    cdef scalar b0 = s[ss], b1 = s[ss + 1], b2 = s[ss + 2], b3 = s[ss + 3]
    cdef scalar c0 = s[2 * ss], c1 = s[2 * ss + 1], c2 = s[2 * ss + 2], c3 = s[2 * ss + 3]
    cdef scalar e0 = s[3 * ss], e1 = s[3 * ss + 1], e2 = s[3 * ss + 2], e3 = s[3 * ss + 3]
    d[0] = a0
    d[1] = b0
    d[2] = c0
    d[3] = e0
    d[ds] = a1
    d[ds + 1] = b1
    d[ds + 2] = c1
    d[ds + 3] = e1
    d[2 * ds] = a2
    d[2 * ds + 1] = b2
    d[2 * ds + 2] = c2
    d[2 * ds + 3] = e2
    d[3 * ds] = a3
    d[3 * ds + 1] = b3
    d[3 * ds + 2] = c3
    d[3 * ds + 3] = e3


cdef void _transpose(const scalar* src, Py_ssize_t src_stride, scalar* dst, Py_ssize_t dst_stride,
                     Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols.

    Cache tiles of TILE x TILE, each done in 4 x 4 register blocks (the
    compiler keeps a block's 16 values in registers; plain loops reload).
    """
    cdef Py_ssize_t i0, j0, i, j, i1, j1, ii, jj
    if rows == 1:
        if dst_stride == 1:
            memcpy(dst, src, cols * sizeof(scalar))
        else:
            for j in range(cols):
                dst[j * dst_stride] = src[j]
        return
    if cols == 1:
        for i in range(rows):
            dst[i] = src[i * src_stride]
        return
    j0 = 0
    while j0 < cols:
        j1 = min(j0 + TILE, cols)
        i0 = 0
        while i0 < rows:
            i1 = min(i0 + TILE, rows)
            jj = j0
            while jj + 4 <= j1:
                ii = i0
                while ii + 4 <= i1:
                    _transpose4(src + ii * src_stride + jj, src_stride,
                                dst + jj * dst_stride + ii, dst_stride)
                    ii += 4
                for j in range(jj, jj + 4):
                    for i in range(ii, i1):
                        dst[j * dst_stride + i] = src[i * src_stride + j]
                jj += 4
            for j in range(jj, j1):
                for i in range(i0, i1):
                    dst[j * dst_stride + i] = src[i * src_stride + j]
            i0 = i1
        j0 = j1


def to_channels_last(const scalar[:, :, :, ::1] x, scalar[:, :, :, ::1] xt, Py_ssize_t b0,
                     Py_ssize_t a0):
    """``xt[a, b, s, c] = x[b0 + b, c, a0 + a, s]``: a channels-last slab.

    ``x`` is the input viewed as (N, C, A, S), ``xt`` is (na, nb, S, C).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12.0).reshape(1, 2, 2, 3)
    >>> xt = np.empty((2, 1, 3, 2))
    >>> _ = to_channels_last(x, xt, 0, 0)
    >>> xt[1, 0]
    array([[ 3.,  9.],
           [ 4., 10.],
           [ 5., 11.]])
    """
    cdef Py_ssize_t na = xt.shape[0], nb = xt.shape[1], S = xt.shape[2], C = xt.shape[3]
    cdef Py_ssize_t A = x.shape[2], tiles = (C + TILE - 1) // TILE, task, b, c0, a
    if x.shape[1] != C or x.shape[3] != S or b0 < 0 or a0 < 0 or b0 + nb > x.shape[0] \
            or a0 + na > A:
        raise ValueError(f"slab ({na}, {nb}, {S}, {C}) at image {b0}, row {a0} does not fit "
                         f"x ({x.shape[0]}, {x.shape[1]}, {A}, {x.shape[3]})")
    if xt.size == 0:
        return xt.base
    with nogil:
        # a tile of channels at a time, walking down the rows: each channel is
        # then read as one sequential stream, which the prefetchers follow
        for task in range(nb * tiles):
            b = task // tiles
            c0 = (task - b * tiles) * TILE
            for a in range(na):
                _transpose(&x[b0 + b, c0, a0 + a, 0], A * S, &xt[a, b, 0, c0], C,
                           min(TILE, C - c0), S)
    return xt.base


def rows_to_output(const scalar[:, ::1] block, scalar[:, :, ::1] out, Py_ssize_t b0,
                   Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t inner):
    """Scatter a channels-last GEMM result into ``out`` (N, O, P).

    ``block`` rows are ordered (a, image, inner position) as :func:`im2row`
    makes them: row ``(t * nb + b) * inner + q`` goes to
    ``out[b0 + b, :, p0 + t * inner + q]``.

    Examples
    --------
    >>> import numpy as np
    >>> out = np.zeros((2, 1, 2))
    >>> _ = rows_to_output(np.arange(4.0).reshape(4, 1), out, 0, 2, 0, 1)
    >>> out.ravel()
    array([0., 2., 1., 3.])
    """
    cdef Py_ssize_t m = block.shape[0], o = block.shape[1], P = out.shape[2], t, b, chunks
    if out.shape[1] != o or nb < 1 or b0 < 0 or b0 + nb > out.shape[0] or inner < 1 \
            or m % (nb * inner) or p0 < 0 or p0 + m // nb > P:
        raise ValueError(f"block ({m}, {o}) of {nb} images does not fit out "
                         f"({out.shape[0]}, {out.shape[1]}, {P}) at image {b0}, position {p0}")
    if m == 0 or o == 0:
        return out.base
    if nb == 1:  # one image: its rows are one run of positions
        inner = m
    chunks = m // inner
    with nogil:
        for t in range(chunks):
            b = t % nb
            _transpose(&block[t * inner, 0], o, &out[b0 + b, 0, p0 + (t // nb) * inner], P,
                       inner, o)
    return out.base


cdef int _check_block(Py_ssize_t o, Py_ssize_t m, Py_ssize_t n, Py_ssize_t oc, Py_ssize_t P,
                      Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t inner) except -1:
    """Raise unless an (o, m) block of ``nb`` images fits an (n, oc, P) array at (b0, p0)."""
    if oc != o or nb < 1 or b0 < 0 or b0 + nb > n or inner < 1 \
            or m % (nb * inner) or p0 < 0 or p0 + m // nb > P:
        raise ValueError(f"block ({o}, {m}) of {nb} images does not fit out "
                         f"({n}, {oc}, {P}) at image {b0}, position {p0}")
    return 0


def columns_to_output(const scalar[:, ::1] block, scalar[:, :, ::1] out, Py_ssize_t b0,
                      Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t inner):
    """Copy a GEMM result ``(O, m)`` with columns ordered (a, image, inner) into ``out``.

    Column ``(t * nb + b) * inner + q`` goes to ``out[b0 + b, :, p0 + t * inner + q]``:
    runs of ``inner`` contiguous values.

    Examples
    --------
    >>> import numpy as np
    >>> out = np.zeros((2, 1, 2))
    >>> _ = columns_to_output(np.arange(4.0).reshape(1, 4), out, 0, 2, 0, 1)
    >>> out.ravel()
    array([0., 2., 1., 3.])
    """
    cdef Py_ssize_t o = block.shape[0], m = block.shape[1], P = out.shape[2], t, b, c, chunks
    _check_block(o, m, out.shape[0], out.shape[1], P, b0, nb, p0, inner)
    if m == 0 or o == 0:
        return out.base
    chunks = m // inner
    with nogil:
        for c in range(o):
            for t in range(chunks):
                b = t % nb
                memcpy(&out[b0 + b, c, p0 + (t // nb) * inner], &block[c, t * inner],
                       inner * sizeof(scalar))
    return out.base


cdef void _fill_row(const scalar* xt, scalar* dst, Py_ssize_t b, Py_ssize_t oa, Py_ssize_t oh,
                    Py_ssize_t ow, Py_ssize_t nb, Py_ssize_t channels, Py_ssize_t groups,
                    Py_ssize_t a_base, const Geometry* g) noexcept nogil:
    """One row of im2row: the receptive field of output (oa, oh, ow) of image b."""
    cdef Py_ssize_t cg = channels // groups
    cdef Py_ssize_t H = g.n[1], W = g.n[2], KW = g.k[2], dw = g.dil[2]
    cdef Py_ssize_t run = KW * cg, plane_taps = g.k[1] * run
    cdef Py_ssize_t gi, ka, kh, kw, ia, ih, iw0, klo, khi
    cdef const scalar* src
    cdef size_t item = sizeof(scalar)
    iw0 = ow * g.s[2] - g.pad[2]
    _valid_range(iw0, dw, W, 0, KW, &klo, &khi)
    for gi in range(groups):
        for ka in range(g.k[0]):
            ia = oa * g.s[0] + ka * g.dil[0] - g.pad[0]
            if ia < 0 or ia >= g.n[0]:
                memset(dst, 0, plane_taps * item)
                dst += plane_taps
                continue
            for kh in range(g.k[1]):
                ih = oh * g.s[1] + kh * g.dil[1] - g.pad[1]
                if ih < 0 or ih >= H:
                    memset(dst, 0, run * item)
                    dst += run
                    continue
                src = xt + (((ia - a_base) * nb + b) * H + ih) * W * channels + gi * cg
                if groups == 1 and dw == 1:
                    # taps and channels are one contiguous run of xt
                    memset(dst, 0, klo * cg * item)
                    memcpy(dst + klo * cg, src + (iw0 + klo) * channels, (khi - klo) * cg * item)
                    memset(dst + khi * cg, 0, (KW - khi) * cg * item)
                else:
                    for kw in range(KW):
                        if klo <= kw < khi:
                            memcpy(dst + kw * cg, src + (iw0 + kw * dw) * channels, cg * item)
                        else:
                            memset(dst + kw * cg, 0, cg * item)
                dst += run


def im2row(const scalar[:, :, :, :, ::1] xt, scalar[:, ::1] rows, kernel, stride, dilation, pad,
           out_spatial, Py_ssize_t input_rows, Py_ssize_t a_base, Py_ssize_t groups=1,
           Py_ssize_t p0=0, Py_ssize_t npos=-1):
    """Row matrix of a channels-last slab: one receptive field per row.

    Parameters
    ----------
    xt : ndarray, (na, nb, H2, W2, C), C-contiguous
        Input rows ``a_base .. a_base + na`` (along A) of nb images.
    rows : ndarray, (nb * npos, groups * Kg), C-contiguous, same dtype
        Overwritten.  Row order (a, image, h2, w2); column order
        (group, ka, kh, kw, channel in group), ``Kg = kernel volume * C / groups``.
    kernel, stride, dilation, pad, out_spatial : 3-tuples of int
        Geometry along (A, H2, W2); ``pad`` is the padding before.
    input_rows : int
        Size of the whole input along A (what lies outside is padding).
    a_base : int
        Index along A of the slab's first row.
    p0, npos : int
        Flattened output positions (over ``out_spatial``) to fill; with
        ``nb > 1`` they must be whole rows along A.

    Examples
    --------
    >>> import numpy as np
    >>> xt = np.arange(4.0).reshape(4, 1, 1, 1, 1)   # a 1-d signal along A
    >>> rows = np.empty((3, 2))
    >>> _ = im2row(xt, rows, (2, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), (3, 1, 1), 4, 0)
    >>> rows
    array([[0., 1.],
           [1., 2.],
           [2., 3.]])
    """
    cdef Geometry g = _geometry((input_rows, xt.shape[2], xt.shape[3]), kernel, stride, dilation,
                                pad, out_spatial)
    cdef Py_ssize_t nb = xt.shape[1], channels = xt.shape[4]
    cdef Py_ssize_t inner = g.out[1] * g.out[2], positions = g.out[0] * inner
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], r, rr, b, p, q, t, lo, hi
    npos = positions - p0 if npos < 0 else npos
    if groups < 1 or channels % groups:
        raise ValueError(f"groups={groups} must divide the {channels} channels")
    if p0 < 0 or npos < 0 or p0 + npos > positions or \
            (nb > 1 and (inner == 0 or p0 % inner or npos % inner)):
        raise ValueError(f"positions [{p0}, {p0 + npos}) invalid for {positions} outputs of "
                         f"{nb} images (several images need whole rows along A)")
    if rows.shape[0] != nb * npos or rows.shape[1] != taps * channels:
        raise ValueError(f"rows has shape ({rows.shape[0]}, {rows.shape[1]}), expected "
                         f"({nb * npos}, {taps * channels})")
    if npos and nb and inner:
        # the slab must hold every input row these outputs read
        lo = (p0 // inner) * g.s[0] - g.pad[0]
        hi = ((p0 + npos - 1) // inner) * g.s[0] + (g.k[0] - 1) * g.dil[0] - g.pad[0] + 1
        lo, hi = max(lo, 0), min(hi, input_rows)
        if lo < hi and (lo < a_base or hi > a_base + xt.shape[0]):
            raise ValueError(f"slab rows [{a_base}, {a_base + xt.shape[0]}) do not cover the "
                             f"input rows [{lo}, {hi}) these outputs read")
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return rows.base
    with nogil:
        for r in range(nb * npos):
            if nb == 1:
                b = 0
                p = p0 + r
            else:
                t = r // (nb * inner)
                rr = r - t * nb * inner
                b = rr // inner
                p = p0 + t * inner + (rr - b * inner)
            q = p % inner
            _fill_row(&xt[0, 0, 0, 0, 0], &rows[r, 0], b, p // inner, q // g.out[2],
                      q % g.out[2], nb, channels, groups, a_base, &g)
    return rows.base


# ============================================================== gradients
#
# The weight gradient is the forward's GEMM with the roles turned round:
# ``dW_t[g] (Og x Kg) += G_g (Og x m) R_t (m x Kg)`` over blocks of the row (or
# column) matrix ``R``, the output gradient ``G`` read in the block's column
# order (straight from the (N, O, P) array for one image, gathered by
# ``gather_columns`` for several).  The input gradient by columns is
# ``cols_g (Kg x m) = W_g^T (Kg x Og) G_g (Og x m)`` followed by ``col2im``.

def gemm_weight(const scalar[:, ::1] rows, const scalar[:, :] g, scalar[:, :, :, ::1] acc,
                Py_ssize_t m, Py_ssize_t shift, bint transposed_rows=False):
    """Accumulate ``acc[t, gi] += G_gi @ R[t * shift : t * shift + m, gi block]``.

    Parameters
    ----------
    rows : ndarray, (R, G * Kg)
        Row matrix (positions x taps) from :func:`im2row`; with
        ``transposed_rows`` a column matrix (G * Kg, positions) from
        :func:`im2col` instead (one tap, ``shift`` ignored).
    g : ndarray, (G * Og, >= m)
        Output gradient, columns in the row matrix's position order; rows
        may be any whole number of elements apart.
    acc : ndarray, (T, G, Og, Kg)
        Accumulated into (BLAS beta = 1).
    m, shift : int
        Positions, and the row offset from one tap along A to the next.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> rows = np.arange(6.0).reshape(3, 2)
    >>> acc = np.zeros((2, 1, 1, 2))
    >>> _ = gemm_weight(rows, np.ones((1, 2)), acc, 2, 1)
    >>> acc[:, 0, 0]   # rows 0+1, then rows 1+2
    array([[2., 4.],
           [6., 8.]])
    """
    cdef Py_ssize_t taps = acc.shape[0], groups = acc.shape[1], og = acc.shape[2]
    cdef Py_ssize_t kg = acc.shape[3], t, gi, ldg = g.strides[0] // sizeof(scalar)
    cdef Py_ssize_t width = rows.shape[0] if transposed_rows else rows.shape[1]
    cdef Py_ssize_t length = rows.shape[1] if transposed_rows else rows.shape[0]
    cdef Py_ssize_t ldr = rows.shape[1]
    if _zgemm == NULL:
        raise RuntimeError("call load_blas() first")
    if width != groups * kg or g.shape[0] != groups * og:
        raise ValueError(f"rows ({rows.shape[0]}, {rows.shape[1]}), output gradient "
                         f"({g.shape[0]}, {g.shape[1]}) and acc ({taps}, {groups}, {og}, {kg}) "
                         "do not match")
    if transposed_rows and taps != 1:
        raise ValueError("a column matrix holds every tap: acc must have one")
    if g.shape[1] > 1 and g.strides[1] != sizeof(scalar):
        raise ValueError("the output gradient must be contiguous along its rows")
    if g.shape[0] == 1:
        ldg = max(g.shape[1], 1)
    elif ldg * <Py_ssize_t>sizeof(scalar) != g.strides[0] or ldg < g.shape[1]:
        raise ValueError("the output gradient's rows must be a whole number of elements apart")
    if m < 0 or shift < 0 or g.shape[1] < m or (m > 0 and (taps - 1) * shift + m > length):
        raise ValueError(f"m={m} and shift={shift} run past rows or the output gradient")
    if max(m, og, kg, ldr, ldg) > BLAS_MAX_DIM:
        raise OverflowError("matrix dimension too large for the BLAS interface")
    if m == 0 or og == 0 or kg == 0 or groups == 0 or taps == 0:
        return
    cdef char plain = b'N', transposed = b'T'
    with nogil:
        for t in range(taps):
            for gi in range(groups):
                # column-major (Kg x Og) = R_t^T (Kg x m) G_g^T (m x Og)
                if transposed_rows:
                    _gemm(transposed, <int>kg, <int>og, <int>m, &rows[gi * kg, 0], <int>ldr,
                          &g[gi * og, 0], <int>ldg, True, &acc[t, gi, 0, 0], <int>kg)
                else:
                    _gemm(plain, <int>kg, <int>og, <int>m, &rows[t * shift, gi * kg], <int>ldr,
                          &g[gi * og, 0], <int>ldg, True, &acc[t, gi, 0, 0], <int>kg)


def gemm_input_columns(const scalar[:, :, ::1] w, const scalar[:, :] g, scalar[:, ::1] cols,
                       Py_ssize_t m):
    """``cols[gi block] = W_gi^T @ G_gi``: the input gradient as a column matrix.

    Parameters
    ----------
    w : ndarray, (G, Og, Kg)
        The weight, taps in :func:`im2col`'s row order (channel-major).
    g : ndarray, (G * Og, >= m)
        Output gradient, one column per (image, position) of the block; rows
        may be any whole number of elements apart.
    cols : ndarray, (G * Kg, >= m)
        Overwritten in its first ``m`` columns; ready for :func:`col2im`.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> cols = np.empty((2, 3))
    >>> _ = gemm_input_columns(np.ones((1, 1, 2)), np.arange(3.0).reshape(1, 3), cols, 3)
    >>> cols
    array([[0., 1., 2.],
           [0., 1., 2.]])
    """
    cdef Py_ssize_t groups = w.shape[0], og = w.shape[1], kg = w.shape[2], gi
    cdef Py_ssize_t ldg = g.strides[0] // sizeof(scalar), ldc = cols.shape[1]
    if _zgemm == NULL:
        raise RuntimeError("call load_blas() first")
    if cols.shape[0] != groups * kg or g.shape[0] != groups * og:
        raise ValueError(f"weight ({groups}, {og}, {kg}), output gradient ({g.shape[0]}, "
                         f"{g.shape[1]}) and cols ({cols.shape[0]}, {cols.shape[1]}) do not match")
    if g.shape[1] > 1 and g.strides[1] != sizeof(scalar):
        raise ValueError("the output gradient must be contiguous along its rows")
    if g.shape[0] == 1:
        ldg = max(g.shape[1], 1)
    elif ldg * <Py_ssize_t>sizeof(scalar) != g.strides[0] or ldg < g.shape[1]:
        raise ValueError("the output gradient's rows must be a whole number of elements apart")
    if m < 0 or m > g.shape[1] or m > cols.shape[1]:
        raise ValueError(f"m={m} runs past the output gradient or cols")
    if max(m, og, kg, ldg, ldc) > BLAS_MAX_DIM:
        raise OverflowError("matrix dimension too large for the BLAS interface")
    if m == 0 or kg == 0 or groups == 0:
        return
    if og == 0:
        cols[:, :m] = 0
        return
    cdef char plain = b'N', transposed = b'T'
    with nogil:
        for gi in range(groups):
            # column-major (m x Kg) = G_g^T (m x Og) W_g (Og x Kg)
            _gemm(plain, <int>m, <int>kg, <int>og, &g[gi * og, 0], <int>ldg,
                  &w[gi, 0, 0], <int>kg, False, &cols[gi * kg, 0], <int>ldc, transposed)


def gather_columns(const scalar[:, :, ::1] out, scalar[:, ::1] block, Py_ssize_t b0,
                   Py_ssize_t nb, Py_ssize_t p0, Py_ssize_t inner):
    """The inverse of :func:`columns_to_output`: ``block (O, m)`` from ``out (N, O, P)``.

    Column ``(t * nb + b) * inner + q`` of ``block`` is
    ``out[b0 + b, :, p0 + t * inner + q]``; ``inner = P`` gives image-major
    columns (the :func:`im2col` order).

    Examples
    --------
    >>> import numpy as np
    >>> block = np.empty((1, 4))
    >>> _ = gather_columns(np.arange(4.0).reshape(2, 1, 2), block, 0, 2, 0, 1)
    >>> block
    array([[0., 2., 1., 3.]])
    """
    cdef Py_ssize_t o = block.shape[0], m = block.shape[1], P = out.shape[2], t, b, c, chunks
    _check_block(o, m, out.shape[0], out.shape[1], P, b0, nb, p0, inner)
    if m == 0 or o == 0:
        return block.base
    chunks = m // inner
    with nogil:
        for c in range(o):
            for t in range(chunks):
                b = t % nb
                memcpy(&block[c, t * inner], &out[b0 + b, c, p0 + (t // nb) * inner],
                       inner * sizeof(scalar))
    return block.base


# ============================================================== lowered blocks straight into out
#
# For few input channels (conv1 of a CIFAR network: 3 channels, 5 x 5) the
# shifted row matrix gives GEMMs only C * K_W deep, which BLAS runs at a third
# of its rate, and the row matrix costs one tiny copy per tap.  Here a worker
# lowers one *unit* (a span of output positions of one image) into a column
# matrix (C*K, span) that stays in its cache, and multiplies it at once:
# ``out[b, g*Og:(g+1)*Og, p0:p0+span] = W_g (Og x Kg) @ cols_g (Kg x span)``,
# written straight into ``out`` (ldc = P), full depth C*K.  Workers take units
# from a shared counter (an atomic add), so the whole batch runs in one call
# per worker without the GIL.


cdef void _im2col_whole_rows(const scalar* x, scalar* cols, Py_ssize_t channels,
                             Py_ssize_t row0, Py_ssize_t nrows,
                             const Geometry* g) noexcept nogil:
    """:func:`_im2col` of one image for whole output rows ``row0 .. row0 + nrows``
    (rows over (od, oh)): the valid span along W is worked out once per tap, not per
    segment, and each segment is one memcpy (with stride 1 along W)."""
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], plane = g.n[0] * g.n[1] * g.n[2]
    cdef Py_ssize_t W = g.n[2], HW = g.n[1] * g.n[2], OW = g.out[2], OH = g.out[1]
    cdef Py_ssize_t sw = g.s[2], ncols = nrows * OW
    cdef Py_ssize_t r, c, t, td, th, tw, iw0, lo, hi, row, od, oh, idd, ih, o
    cdef const scalar* src
    cdef scalar* dst
    cdef size_t item = sizeof(scalar)
    for r in range(channels * taps):
        c = r // taps
        t = r - c * taps
        td = t // (g.k[1] * g.k[2])
        th = (t // g.k[2]) % g.k[1]
        tw = t % g.k[2]
        iw0 = tw * g.dil[2] - g.pad[2]
        _valid_range(iw0, sw, W, 0, OW, &lo, &hi)
        dst = cols + r * ncols
        od = row0 // OH
        oh = row0 - od * OH
        for row in range(nrows):
            idd = od * g.s[0] + td * g.dil[0] - g.pad[0]
            ih = oh * g.s[1] + th * g.dil[1] - g.pad[1]
            if idd < 0 or idd >= g.n[0] or ih < 0 or ih >= g.n[1] or lo >= hi:
                memset(dst, 0, OW * item)
            else:
                src = x + c * plane + idd * HW + ih * W + iw0
                if lo > 0:
                    memset(dst, 0, lo * item)
                if sw == 1:
                    memcpy(dst + lo, src + lo, (hi - lo) * item)
                else:
                    for o in range(lo, hi):
                        dst[o] = src[o * sw]
                if hi < OW:
                    memset(dst + hi, 0, (OW - hi) * item)
            dst += OW
            oh += 1
            if oh == OH:
                oh = 0
                od += 1


def lowered_gemm(const scalar[:, :, :, :, ::1] x, const scalar[:, :, ::1] w,
                 scalar[:, :, ::1] out, scalar[::1] scratch, kernel, stride, dilation, pad,
                 out_spatial, Py_ssize_t span, Py_ssize_t[::1] counter,
                 const scalar[::1] bias=None):
    """Lower and multiply units of ``span`` output positions of one image, until none is left.

    Unit ``u`` is image ``u // chunks``, positions ``(u % chunks) * span`` onwards
    (``chunks = ceil(P / span)``); units are taken from ``counter[0]`` with an
    atomic add, so several threads may run this on the same arrays at once,
    each with its own ``scratch``.

    Parameters
    ----------
    x : ndarray, (N, C, D, H, W), C-contiguous
        Unpadded input (1-d and 2-d with leading size-1 axes).
    w : ndarray, (G, Og, Kg), C-contiguous
        Weights, taps in :func:`im2col`'s row order within a group.
    out : ndarray, (N, G * Og, P), C-contiguous
        Overwritten.
    scratch : ndarray, at least ``G * Kg * span`` elements
        This worker's column matrix.
    kernel, stride, dilation, pad, out_spatial : 3-tuples of int
        As for :func:`im2col`.
    span : int
        Output positions per unit.
    counter : ndarray of intp, shape (1,)
        Next unit to take; start it at 0.
    bias : ndarray, (G * Og,), optional
        Added to every output of its channel: written into the unit's outputs
        (still in cache) before the GEMM, which then accumulates (beta = 1),
        instead of a separate pass over the whole output.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> x = np.arange(5.0).reshape(1, 1, 1, 1, 5)
    >>> out = np.empty((1, 1, 4))
    >>> _ = lowered_gemm(x, np.ones((1, 1, 2)), out, np.empty(8), (1, 1, 2), (1, 1, 1),
    ...                  (1, 1, 1), (0, 0, 0), (1, 1, 4), 4, np.zeros(1, np.intp))
    >>> out.ravel()
    array([1., 3., 5., 7.])
    """
    cdef Geometry g = _geometry((x.shape[2], x.shape[3], x.shape[4]), kernel, stride, dilation,
                                pad, out_spatial)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], groups = w.shape[0], og = w.shape[1]
    cdef Py_ssize_t kg = w.shape[2], taps = g.k[0] * g.k[1] * g.k[2]
    cdef Py_ssize_t P = g.out[0] * g.out[1] * g.out[2], chunks, units, u, b, p0, npos, gi
    if _zgemm == NULL:
        raise RuntimeError("call load_blas() first")
    if groups < 1 or c % groups or kg != (c // groups) * taps or out.shape[0] != n \
            or out.shape[1] != groups * og or out.shape[2] != P:
        raise ValueError(f"x ({n}, {c}, ...), weights ({groups}, {og}, {kg}) and out "
                         f"({out.shape[0]}, {out.shape[1]}, {out.shape[2]}) do not match")
    if span < 1 or scratch.shape[0] < c * taps * min(span, P):
        raise ValueError(f"scratch of {scratch.shape[0]} cannot hold {c * taps} x {span}")
    if max(P, kg, og, span) > BLAS_MAX_DIM:
        raise OverflowError("matrix dimension too large for the BLAS interface")
    cdef bint with_bias = bias is not None
    if with_bias and bias.shape[0] != groups * og:
        raise ValueError(f"bias has {bias.shape[0]} entries for {groups * og} output channels")
    if n == 0 or P == 0 or og == 0:
        return out.base
    cdef Py_ssize_t ch, q
    cdef scalar value
    cdef scalar* row
    chunks = (P + span - 1) // span
    units = n * chunks
    cdef char plain = b'N'
    cdef scalar* cols = &scratch[0]
    with nogil:
        while True:
            u = fastconv_take(&counter[0])
            if u >= units:
                break
            b = u // chunks
            p0 = (u - b * chunks) * span
            npos = min(span, P - p0)
            if p0 % g.out[2] == 0 and npos % g.out[2] == 0:
                _im2col_whole_rows(&x[b, 0, 0, 0, 0], cols, c, p0 // g.out[2],
                                   npos // g.out[2], &g)
            else:
                _im2col(&x[b, 0, 0, 0, 0], cols, c, npos, 1, p0, npos, &g)
            if with_bias:
                for ch in range(groups * og):
                    value = bias[ch]
                    row = &out[b, ch, p0]
                    for q in range(npos):
                        row[q] = value
            for gi in range(groups):
                # column-major (npos x Og) = cols_g^T (npos x Kg) W_g^T (Kg x Og): out's rows
                _gemm(plain, <int>npos, <int>og, <int>kg, cols + gi * kg * npos, <int>npos,
                      &w[gi, 0, 0], <int>kg, with_bias, &out[b, gi * og, p0], <int>P)
    return out.base
