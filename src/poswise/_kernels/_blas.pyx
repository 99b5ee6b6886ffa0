"""Row-major BLAS shim over ``scipy.linalg.cython_blas``.

poswise keeps every matrix row-major (C order). BLAS is column-major, and a row-major
matrix read as column-major is its transpose, so ``C = op(A) op(B)`` in row-major is
computed as ``C^T = op(B)^T op(A)^T`` in column-major: the operands swap, and so do
``m`` and ``n``. This is done once, here, and nowhere else.

SciPy exposes the Fortran ABI: every argument by pointer, no ``const``. The casts that
drop ``const`` are safe because BLAS never writes its input operands.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm, saxpy, daxpy, sdot, ddot


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* A, int lda,
               const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil:
    """C := alpha op(A) op(B) + beta C, row-major; C is m x n, op(A) m x k, op(B) k x n."""
    # IN: A, B (never written; C must not alias them).  OUT: C
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)


cdef void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y := alpha x + y (contiguous)."""
    cdef int inc = 1
    if floating is float:
        saxpy(&n, &alpha, <float*>x, &inc, y, &inc)
    else:
        daxpy(&n, &alpha, <double*>x, &inc, y, &inc)


cdef floating dot(int n, const floating* x, const floating* y) noexcept nogil:
    """Return x . y (contiguous)."""
    cdef int inc = 1
    if floating is float:
        return sdot(&n, <float*>x, &inc, <float*>y, &inc)
    else:
        return ddot(&n, <double*>x, &inc, <double*>y, &inc)
