# The only poswise module that touches the BLAS ABI (see _blas.pyx).

ctypedef fused floating:
    float
    double

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* A, int lda,
               const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil

cdef void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil

cdef floating dot(int n, const floating* x, const floating* y) noexcept nogil
