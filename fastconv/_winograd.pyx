# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of the Winograd backend: tile transforms around one GEMM per transform point.

Minimal filtering ``F(m x m', r x r')`` (Winograd; Lavin & Gray 2016) computes an
``m x m'`` block of a stride-1 correlation with an ``r x r'`` kernel from an
``a x a'`` input tile (``a = m + r - 1``) as ``Y = A^T [U * V] A'``, with
``V = B^T d B'`` the transformed tile and ``U = G g G'^T`` the transformed kernel.
Summed over the input channels, the elementwise product becomes one matrix
product per transform point ``(xi, nu)``: ``M[p] (O x T) = U[p] (O x C) @ V[p] (C x T)``
over T tiles.  That is ``a a' / (m m')`` multiply-adds per output instead of
``r r'``: 2.25x fewer for F(2x2, 3x3), 4x for F(4x4, 3x3), 2.8x for F(2x2, 5x5).

The input is first rearranged batch-blocked, ``xb`` of shape ``(N/nb, C, H, W, nb)``
(:func:`to_blocked`; ``nb = 1`` is plain NCHW): the ``nb`` images of a block sit
next to each other, so a tile of all of them is ``a a'`` contiguous copies and every
transform pass runs along ``nb`` images at once.  Work is cut into *units*: one
image block and ``positions`` consecutive tile positions (row-major), i.e.
``ld = positions * nb`` tiles, tile ``k * nb + j`` being position ``k`` of image ``j``.
A worker takes units from a shared counter (atomic add) and, for each, transforms
the unit's input tiles into its scratch, runs the GEMMs there and transforms the
products straight into ``out``: everything a unit touches stays in the worker's
cache, and the whole call runs without the GIL.  BLAS runs one thread per worker
(the caller arranges that).

Scratch layout (``ld`` the leading dimension of every matrix), tiles contiguous so
that each transform pass is a handful of axpy loops that vectorise::

    d    (a, a', ld)      one channel's gathered tiles (later one output channel's)
    tmp  (a, a', ld)      after the pass along the first axis
    V    (a a', C, ld)    transformed input tiles
    M    (a a', O, ld)    their products with U

The transform matrices come from the caller as float64 (rows x cols, C order); the
passes skip their zeros.  1-d problems are 2-d with a size-1 first axis (and the
trivial transform ``a = m = r = 1`` along it).
"""
cimport cython

ctypedef fused scalar:
    float
    double
    float complex
    double complex

include "_shared.pxi"


cdef struct Tiling:
    Py_ssize_t n, nb, kp        # images, images per block, tile positions per unit
    Py_ssize_t c, h, w          # input channels and spatial size
    Py_ssize_t o, oh, ow        # output channels and spatial size
    Py_ssize_t ah, aw, mh, mw   # transform size a and outputs per tile m, per axis
    Py_ssize_t th, tw           # tiles per axis
    Py_ssize_t ph, pw           # zero padding before, per axis
    Py_ssize_t ld               # tiles per unit (kp * nb): the scratch's leading dimension


cdef Tiling _tiling(xb_shape, out_shape, transform, tiles, pad,
                    Py_ssize_t positions) except *:
    cdef Tiling g
    g.c, g.h, g.w, g.nb = xb_shape[1], xb_shape[2], xb_shape[3], xb_shape[4]
    g.n, g.o, g.oh, g.ow = out_shape[0], out_shape[1], out_shape[2], out_shape[3]
    g.ah, g.aw, g.mh, g.mw = transform
    g.th, g.tw = tiles
    g.ph, g.pw = pad
    g.kp = positions
    g.ld = positions * g.nb
    if g.th * g.mh < g.oh or g.tw * g.mw < g.ow or positions < 1:
        raise ValueError(f"{tiles} tiles of {g.mh} x {g.mw} outputs do not cover the output "
                         f"({g.oh}, {g.ow}), or positions {positions} < 1")
    if xb_shape[0] * g.nb < g.n or (xb_shape[0] - 1) * g.nb >= max(g.n, 1):
        raise ValueError(f"{xb_shape[0]} blocks of {g.nb} images do not hold {g.n} images")
    return g


cdef void _apply(const double* mat, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t count,
                 const scalar* src, Py_ssize_t sj, Py_ssize_t ss,
                 scalar* dst, Py_ssize_t di, Py_ssize_t ds, Py_ssize_t nt) noexcept nogil:
    """``dst[i, s, :nt] = sum_j mat[i, j] * src[j, s, :nt]`` for ``s < count``.

    Row ``(j, s)`` of ``src`` starts at ``src + j*sj + s*ss``, row ``(i, s)`` of
    ``dst`` at ``dst + i*di + s*ds``.  Zero coefficients are skipped and up to four
    terms are summed in one loop, so each output is stored once for the usual
    rows (the transforms' rows hold at most four non-zeros, but for ``A^T``).
    """
    cdef Py_ssize_t i, j, s, t, k, n
    cdef scalar c[8]
    cdef Py_ssize_t col[8]
    cdef scalar* out
    cdef const scalar* p0
    cdef const scalar* p1
    cdef const scalar* p2
    cdef const scalar* p3
    for i in range(rows):
        n = 0
        for j in range(cols):
            if mat[i * cols + j] != 0:
                c[n] = mat[i * cols + j]
                col[n] = j
                n += 1
        for s in range(count):
            out = dst + i * di + s * ds
            p0 = src + col[0] * sj + s * ss
            if n == 0:
                for t in range(nt):
                    out[t] = 0
            elif n == 1:
                for t in range(nt):
                    out[t] = c[0] * p0[t]
            elif n == 2:
                p1 = src + col[1] * sj + s * ss
                for t in range(nt):
                    out[t] = c[0] * p0[t] + c[1] * p1[t]
            elif n == 3:
                p1 = src + col[1] * sj + s * ss
                p2 = src + col[2] * sj + s * ss
                for t in range(nt):
                    out[t] = c[0] * p0[t] + c[1] * p1[t] + c[2] * p2[t]
            else:
                p1 = src + col[1] * sj + s * ss
                p2 = src + col[2] * sj + s * ss
                p3 = src + col[3] * sj + s * ss
                for t in range(nt):
                    out[t] = c[0] * p0[t] + c[1] * p1[t] + c[2] * p2[t] + c[3] * p3[t]
                for k in range(4, n):
                    p0 = src + col[k] * sj + s * ss
                    for t in range(nt):
                        out[t] += c[k] * p0[t]


cdef void _gather(const scalar* planes, Py_ssize_t h, Py_ssize_t w, Py_ssize_t sh,
                  Py_ssize_t sw, Py_ssize_t step_h, Py_ssize_t step_w, Py_ssize_t offset_h,
                  Py_ssize_t offset_w, const Tiling* g, Py_ssize_t k0, Py_ssize_t nk,
                  scalar* d) noexcept nogil:
    """``d[a, b, k*nb:(k+1)*nb] = plane[y0 + a, x0 + b, :]`` (0 outside) for positions ``k0 + k``.

    ``planes`` is one block's plane ``(h, w, nb)``; tile position ``(ty, tx)`` of size
    ``sh x sw`` starts at ``(ty * step_h - offset_h, tx * step_w - offset_w)``.
    """
    cdef Py_ssize_t k, pos, y0, x0, a, b, y, xx, j, nb = g.nb, ld = g.ld
    cdef const scalar* src
    cdef scalar* dst
    for k in range(nk):
        pos = k0 + k
        y0 = (pos // g.tw) * step_h - offset_h
        x0 = (pos % g.tw) * step_w - offset_w
        if y0 >= 0 and x0 >= 0 and y0 + sh <= h and x0 + sw <= w:   # inside: no checks
            for a in range(sh):
                src = planes + ((y0 + a) * w + x0) * nb
                dst = d + a * sw * ld + k * nb
                if nb == 8:   # the usual block: a constant trip count the compiler unrolls
                    for b in range(sw):
                        for j in range(8):
                            dst[b * ld + j] = src[b * 8 + j]
                else:
                    for b in range(sw):
                        for j in range(nb):
                            dst[b * ld + j] = src[b * nb + j]
            continue
        for a in range(sh):
            y = y0 + a
            for b in range(sw):
                xx = x0 + b
                dst = d + (a * sw + b) * ld + k * nb
                if 0 <= y < h and 0 <= xx < w:
                    src = planes + (y * w + xx) * nb
                    for j in range(nb):
                        dst[j] = src[j]
                else:
                    for j in range(nb):
                        dst[j] = 0


cdef void _transform_input(const scalar* xb, const double* bt_h, const double* bt_w,
                           const Tiling* g, Py_ssize_t k0, Py_ssize_t nk,
                           scalar* d, scalar* tmp, scalar* v) noexcept nogil:
    """``V[p, c, :nt]`` for every channel: ``B^T d B'`` of the unit's input tiles
    (``xb`` at the unit's image block)."""
    cdef Py_ssize_t c, ld = g.ld, aw = g.aw, nt = nk * g.nb
    for c in range(g.c):
        _gather(xb + c * g.h * g.w * g.nb, g.h, g.w, g.ah, g.aw, g.mh, g.mw, g.ph, g.pw, g, k0,
                nk, d)
        _apply(bt_h, g.ah, g.ah, aw, d, aw * ld, ld, tmp, aw * ld, ld, nt)
        _apply(bt_w, aw, aw, g.ah, tmp, ld, aw * ld, v + c * ld, g.c * ld, aw * g.c * ld, nt)


cdef void _transform_output(const scalar* m, const double* at_h, const double* at_w,
                            const Tiling* g, Py_ssize_t block, Py_ssize_t k0, Py_ssize_t nk,
                            scalar* tmp, scalar* y, scalar* out, const scalar* bias) noexcept nogil:
    """``out`` (+ bias) from ``A^T M A'`` of the unit's tiles, every output channel."""
    cdef Py_ssize_t o, nb = g.nb, ld = g.ld, aw = g.aw, mw = g.mw
    cdef Py_ssize_t nt = nk * nb, plane = g.oh * g.ow
    cdef scalar add = 0
    for o in range(g.o):
        _apply(at_h, g.mh, g.ah, aw, m + o * ld, aw * g.o * ld, g.o * ld, tmp, aw * ld, ld, nt)
        _apply(at_w, mw, aw, g.mh, tmp, ld, aw * ld, y, ld, mw * ld, nt)
        if bias != NULL:
            add = bias[o]
        _store_outputs(y, g, block, k0, nk, out + (block * nb * g.o + o) * plane, add)


cdef void _store_outputs(const scalar* y, const Tiling* g, Py_ssize_t block, Py_ssize_t k0,
                         Py_ssize_t nk, scalar* out, scalar add) noexcept nogil:
    """``out[j, y0 + i, x] = y[i, x % m', k, j] + add`` for the unit's tiles (positions
    ``k0 + k``) and images ``j`` of the block; ``out`` points at the block's first image
    and this output channel, images ``O * OH * OW`` apart.

    The unit's tiles are walked as runs along output rows: within a run, output
    ``x`` of every image is at ``y[i, j, k, :]`` for ``k, j = divmod(x, m')``, a vector
    of ``nb`` images.  With 8 images, 8 such vectors (8 consecutive ``x``) form an
    8 x 8 block that is transposed in a small local array, so every image gets 8
    contiguous outputs at once instead of 8 scattered stores.
    """
    cdef Py_ssize_t nb = g.nb, ld = g.ld, mw = g.mw, image = g.o * g.oh * g.ow
    cdef Py_ssize_t images = min(nb, g.n - block * nb)
    cdef Py_ssize_t i, k, run, pos, ty, tx, oy, x, xs, xe, xi, xx, jj
    cdef scalar blk[64]
    cdef const scalar* src
    cdef scalar* dst
    for i in range(g.mh):
        k = 0
        while k < nk:
            pos = k0 + k
            ty = pos // g.tw
            tx = pos - ty * g.tw
            run = min(nk - k, g.tw - tx)      # positions left in this tile row
            oy = ty * g.mh + i
            if oy < g.oh:
                xs = tx * mw                  # the run's outputs along the row: xs .. xe
                xe = min((tx + run) * mw, g.ow)
                x = xs
                if nb == 8:
                    while x + 8 <= xe:
                        for xi in range(8):
                            xx = x + xi - xs
                            src = y + (i * mw + xx % mw) * ld + (k + xx // mw) * 8
                            for jj in range(8):
                                blk[xi * 8 + jj] = src[jj]
                        for jj in range(images):
                            dst = out + jj * image + oy * g.ow + x
                            for xi in range(8):
                                dst[xi] = blk[xi * 8 + jj] + add
                        x += 8
                while x < xe:
                    xx = x - xs
                    src = y + (i * mw + xx % mw) * ld + (k + xx // mw) * nb
                    for jj in range(images):
                        out[jj * image + oy * g.ow + x] = src[jj] + add
                    x += 1
            k += run


cdef void _transform_grad_output(const scalar* gyb, const double* a_h, const double* a_w,
                                 const Tiling* g, Py_ssize_t k0, Py_ssize_t nk,
                                 scalar* d, scalar* tmp, scalar* m) noexcept nogil:
    """``M[p, o, :nt] = A dY A'^T`` for every output channel: the adjoint of
    :func:`_transform_output` (``a_h``, ``a_w`` are ``A^T`` transposed; ``gyb`` the
    batch-blocked output gradient at the unit's image block)."""
    cdef Py_ssize_t o, ld = g.ld, aw = g.aw, mw = g.mw, nt = nk * g.nb
    for o in range(g.o):
        _gather(gyb + o * g.oh * g.ow * g.nb, g.oh, g.ow, g.mh, mw, g.mh, mw, 0, 0, g, k0, nk,
                d)
        _apply(a_h, g.ah, g.mh, mw, d, mw * ld, ld, tmp, mw * ld, ld, nt)
        _apply(a_w, aw, mw, g.ah, tmp, ld, mw * ld, m + o * ld, g.o * ld, aw * g.o * ld, nt)


cdef inline Py_ssize_t _unit_tiles(const Tiling* g, Py_ssize_t unit, Py_ssize_t chunks,
                                   Py_ssize_t* k0, Py_ssize_t* nk) noexcept nogil:
    """Unit ``unit``'s image block (returned) and its tile positions ``k0 .. k0 + nk``,
    ``chunks`` units per block."""
    cdef Py_ssize_t blk = unit // chunks
    k0[0] = (unit - blk * chunks) * g.kp
    nk[0] = min(g.kp, g.th * g.tw - k0[0])
    return blk


cdef int _check(const Tiling* g, Py_ssize_t points, Py_ssize_t groups, Py_ssize_t og,
                Py_ssize_t cg, Py_ssize_t scratch) except -1:
    if _zgemm == NULL:
        raise RuntimeError("call load_blas() first")
    if points != g.ah * g.aw or groups < 1 or groups * cg != g.c or groups * og != g.o:
        raise ValueError(f"transformed weights ({points}, {groups}, {og}, {cg}) do not match "
                         f"{g.ah} x {g.aw} transform points, {g.c} input and {g.o} output "
                         "channels")
    if scratch < scratch_size(g.ah, g.aw, g.c, g.o, g.ld):
        raise ValueError(f"scratch of {scratch} elements is smaller than "
                         f"{scratch_size(g.ah, g.aw, g.c, g.o, g.ld)}")
    if max(g.ld, g.c, g.o) > BLAS_MAX_DIM:
        raise OverflowError("matrix dimension too large for the BLAS interface")
    return 0


cdef inline void _split_scratch(scalar* scratch, const Tiling* g, scalar** d, scalar** tmp,
                                scalar** v, scalar** m) noexcept nogil:
    """The parts of a worker's scratch (:func:`scratch_size`): two transform buffers ``d``
    and ``tmp`` of one tile area (points x ld) each, the transformed input ``v``
    (C areas) and the products ``m`` (O areas)."""
    cdef Py_ssize_t area = g.ah * g.aw * g.ld
    d[0] = scratch
    tmp[0] = scratch + area
    v[0] = tmp[0] + area
    m[0] = v[0] + area * g.c


def scratch_size(Py_ssize_t ah, Py_ssize_t aw, Py_ssize_t c, Py_ssize_t o, Py_ssize_t ld):
    """Elements of scratch one worker needs for units of ``ld`` tiles (module docstring).

    Examples
    --------
    >>> scratch_size(4, 4, 8, 8, 16)
    4608
    """
    return ah * aw * ld * (2 + c + o)


def to_blocked(const scalar[:, :, ::1] x, scalar[:, :, :, ::1] xb, Py_ssize_t[::1] counter):
    """Batch-blocked copy: ``xb[i, c, p, j] = x[i*nb + j, c, p]``, 0 past the last image.

    ``x`` is ``(N, C, P)`` (``P`` the flattened plane), ``xb`` ``(ceil(N/nb), C, P, nb)``.
    Units are (block, channel) pairs taken from ``counter``, so several threads
    may share the work.

    Examples
    --------
    >>> import numpy as np
    >>> xb = np.empty((2, 1, 2, 2))
    >>> _ = to_blocked(np.arange(6.0).reshape(3, 1, 2), xb, np.zeros(1, np.intp))
    >>> xb[:, 0]
    array([[[0., 2.],
            [1., 3.]],
    <BLANKLINE>
           [[4., 0.],
            [5., 0.]]])
    """
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], plane = x.shape[2]
    cdef Py_ssize_t blocks = xb.shape[0], nb = xb.shape[3]
    if xb.shape[1] != c or xb.shape[2] != plane or blocks * nb < n \
            or (blocks - 1) * nb >= max(n, 1):
        raise ValueError(f"({blocks}, {xb.shape[1]}, {xb.shape[2]}, {nb}) blocks do not match "
                         f"an input ({n}, {c}, {plane})")
    cdef Py_ssize_t unit, blk, ch, j, q, images, image = c * plane
    cdef const scalar* src
    cdef scalar* dst
    if n == 0 or c == 0 or plane == 0:
        return xb.base
    with nogil:
        while True:
            unit = fastconv_take(&counter[0])
            if unit >= blocks * c:
                break
            blk = unit // c
            ch = unit - blk * c
            dst = &xb[blk, ch, 0, 0]
            images = min(nb, n - blk * nb)
            src = &x[blk * nb, ch, 0]
            # stores in order, loads from ``images`` rows at once (a stride of C*P apart)
            for q in range(plane):
                for j in range(images):
                    dst[q * nb + j] = src[j * image + q]
                for j in range(images, nb):
                    dst[q * nb + j] = 0
    return xb.base


def forward(const scalar[:, :, :, :, ::1] xb, const scalar[:, :, :, ::1] u,
            scalar[:, :, :, ::1] out, scalar[::1] scratch, const double[:, ::1] bt_h,
            const double[:, ::1] bt_w, const double[:, ::1] at_h, const double[:, ::1] at_w,
            tiles, pad, Py_ssize_t positions, Py_ssize_t[::1] counter,
            const scalar[::1] bias=None):
    """Stride-1 correlation by Winograd tiles, units taken from ``counter``.

    Several threads may run this on the same arrays at once, each with its own
    ``scratch``; together they compute every unit once.

    Parameters
    ----------
    xb : ndarray, (ceil(N/nb), C, H, W, nb), C-contiguous
        The unpadded input, batch-blocked (:func:`to_blocked`).
    u : ndarray, (a*a', G, O/G, C/G), C-contiguous
        Transformed weights ``G g G'^T``, one (O/G x C/G) matrix per point and group.
    out : ndarray, (N, O, OH, OW), C-contiguous
        Overwritten.
    scratch : ndarray, at least ``scratch_size(a, a', C, O, positions * nb)`` elements
    bt_h, bt_w : ndarray of float64, (a, a) and (a', a')
        ``B^T`` per axis.
    at_h, at_w : ndarray of float64, (m, a) and (m', a')
        ``A^T`` per axis.
    tiles : (int, int)
        Tiles per axis, covering the output.
    pad : (int, int)
        Zero padding before, per axis (the padding after is implied).
    positions : int
        Tile positions per unit.
    counter : ndarray of intp, shape (1,)
        Next unit to take; start it at 0.
    bias : ndarray, (O,), optional
        Added to every output of its channel.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> one = np.ones((1, 1))
    >>> bt = np.array([[-1., 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
    >>> at = np.array([[1., 1, 1, 0], [0, 1, -1, 1]])
    >>> xb = np.arange(5.0).reshape(1, 1, 1, 5, 1)
    >>> u = np.array([0., 0.5, -0.5, 0]).reshape(4, 1, 1, 1)  # G (0, 1, 0): the identity
    >>> out = np.empty((1, 1, 1, 3))
    >>> _ = forward(xb, u, out, np.empty(64), one, bt, one, at, (1, 2), (0, 0), 2,
    ...             np.zeros(1, np.intp))
    >>> out.ravel()
    array([1., 2., 3.])
    """
    cdef Tiling g = _tiling(xb.shape, out.shape, (bt_h.shape[0], bt_w.shape[0], at_h.shape[0],
                                                  at_w.shape[0]), tiles, pad, positions)
    cdef Py_ssize_t points = u.shape[0], groups = u.shape[1], og = u.shape[2], cg = u.shape[3]
    _check(&g, points, groups, og, cg, scratch.shape[0])
    if bt_h.shape[1] != g.ah or bt_w.shape[1] != g.aw or at_h.shape[1] != g.ah \
            or at_w.shape[1] != g.aw:
        raise ValueError("the transform matrices do not match")
    if bias is not None and bias.shape[0] != g.o:
        raise ValueError(f"bias has {bias.shape[0]} entries for {g.o} output channels")
    cdef Py_ssize_t chunks = (g.th * g.tw + positions - 1) // positions
    cdef Py_ssize_t units = xb.shape[0] * chunks
    if g.n == 0 or g.o == 0:
        return out.base
    cdef Py_ssize_t unit, blk, k0, nk, nt, p, gi, ld = g.ld
    cdef scalar *d, *tmp, *v, *m
    _split_scratch(&scratch[0], &g, &d, &tmp, &v, &m)
    cdef const scalar* bias_ptr = &bias[0] if bias is not None else NULL
    cdef char plain = b'N'
    with nogil:
        while True:
            unit = fastconv_take(&counter[0])
            if unit >= units:
                break
            blk = _unit_tiles(&g, unit, chunks, &k0, &nk)
            nt = nk * g.nb
            _transform_input(&xb[blk, 0, 0, 0, 0], &bt_h[0, 0], &bt_w[0, 0], &g, k0, nk, d, tmp,
                             v)
            for p in range(points):
                for gi in range(groups):
                    # column-major M_p,g (nt x Og) = V_p,g^T (nt x Cg) U_p,g^T (Cg x Og)
                    _gemm(plain, <int>nt, <int>og, <int>cg, v + (p * g.c + gi * cg) * ld, <int>ld,
                          &u[p, gi, 0, 0], <int>cg, False, m + (p * g.o + gi * og) * ld, <int>ld)
            _transform_output(m, &at_h[0, 0], &at_w[0, 0], &g, blk, k0, nk, tmp, d,
                              &out[0, 0, 0, 0], bias_ptr)
    return out.base


def weight_gradient(const scalar[:, :, :, :, ::1] xb, const scalar[:, :, :, :, ::1] gyb,
                    scalar[:, :, :, ::1] du, scalar[::1] scratch, const double[:, ::1] bt_h,
                    const double[:, ::1] bt_w, const double[:, ::1] a_h,
                    const double[:, ::1] a_w, tiles, pad, Py_ssize_t positions,
                    Py_ssize_t[::1] counter):
    """Add to ``du`` the transformed weight gradient of the units taken from ``counter``.

    The adjoint of :func:`forward` in its weights: ``dU[p] += M[p] @ V[p]^T`` with
    ``M = A dY A'^T`` the transformed output gradient; ``G'^T dU G`` (the caller's)
    is then the weight gradient.  Each thread accumulates into its own ``du``.

    Parameters
    ----------
    xb : ndarray, (ceil(N/nb), C, H, W, nb), C-contiguous
        The forward input, batch-blocked.
    gyb : ndarray, (ceil(N/nb), O, OH, OW, nb), C-contiguous
        Gradient for the forward output, batch-blocked (0 for the padding images).
    du : ndarray, (a*a', G, O/G, C/G), C-contiguous
        Accumulated into.
    scratch, bt_h, bt_w, tiles, pad, positions, counter :
        As for :func:`forward`.
    a_h, a_w : ndarray of float64, (a, m) and (a', m')
        ``A`` (``A^T`` transposed) per axis.

    Examples
    --------
    >>> import numpy as np
    >>> load_blas()
    >>> one = np.ones((1, 1))
    >>> bt = np.array([[-1., 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
    >>> a = np.array([[1., 1, 1, 0], [0, 1, -1, 1]]).T.copy()
    >>> xb = np.arange(5.0).reshape(1, 1, 1, 5, 1)
    >>> du = np.zeros((4, 1, 1, 1))
    >>> _ = weight_gradient(xb, np.ones((1, 1, 1, 3, 1)), du, np.empty(64), one, bt, one, a,
    ...                     (1, 2), (0, 0), 2, np.zeros(1, np.intp))
    >>> g = np.array([[-1., 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    >>> g.T @ du.ravel()     # the sums of x over each tap's windows
    array([3., 6., 9.])
    """
    cdef Tiling g = _tiling(xb.shape, (xb.shape[0] * xb.shape[4], gyb.shape[1], gyb.shape[2],
                                       gyb.shape[3]),
                            (bt_h.shape[0], bt_w.shape[0], a_h.shape[1], a_w.shape[1]), tiles,
                            pad, positions)
    cdef Py_ssize_t points = du.shape[0], groups = du.shape[1], og = du.shape[2], cg = du.shape[3]
    _check(&g, points, groups, og, cg, scratch.shape[0])
    if gyb.shape[0] != xb.shape[0] or gyb.shape[4] != g.nb or a_h.shape[0] != g.ah \
            or a_w.shape[0] != g.aw:
        raise ValueError("grad_output, x and the transform matrices do not match")
    cdef Py_ssize_t chunks = (g.th * g.tw + positions - 1) // positions
    cdef Py_ssize_t units = xb.shape[0] * chunks
    if g.n == 0 or g.o == 0 or g.c == 0:
        return du.base
    cdef Py_ssize_t unit, blk, k0, nk, nt, p, gi, ld = g.ld
    cdef scalar *d, *tmp, *v, *m
    _split_scratch(&scratch[0], &g, &d, &tmp, &v, &m)
    cdef char transposed = b'T'
    with nogil:
        while True:
            unit = fastconv_take(&counter[0])
            if unit >= units:
                break
            blk = _unit_tiles(&g, unit, chunks, &k0, &nk)
            nt = nk * g.nb
            _transform_input(&xb[blk, 0, 0, 0, 0], &bt_h[0, 0], &bt_w[0, 0], &g, k0, nk, d, tmp,
                             v)
            _transform_grad_output(&gyb[blk, 0, 0, 0, 0], &a_h[0, 0], &a_w[0, 0], &g, k0, nk, d,
                                   tmp, m)
            for p in range(points):
                for gi in range(groups):
                    # column-major dU_p,g (Cg x Og) += V_p,g (Cg x nt) M_p,g^T (nt x Og)
                    _gemm(transposed, <int>cg, <int>og, <int>nt, v + (p * g.c + gi * cg) * ld,
                          <int>ld, m + (p * g.o + gi * og) * ld, <int>ld, True,
                          &du[p, gi, 0, 0], <int>cg)
    return du.base
