from libc.stdint cimport uint16_t

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               float alpha, const float* a, int lda,
               const float* b, int ldb,
               float beta, float* c, int ldc) noexcept nogil

cdef int gemm_prec(int bf16, bint trans_a, bint trans_b, int m, int n, int k,
                   const float* a, int lda, const float* b, int ldb,
                   float beta, float* c, int ldc) noexcept nogil

cdef int gemm_tiled(bint trans_a, bint trans_b, int m, int n, int k,
                    const float* a, int lda, const float* b, int ldb,
                    float beta, float* c, int ldc,
                    int n_tiles, int n_threads, int bf16) noexcept nogil

cdef int gemm_tiled_bf16_a(int m, int n, int k, const uint16_t* a, int lda,
                           const float* b, int ldb, float beta, float* c, int ldc,
                           int n_tiles, int n_threads, int bf16) noexcept nogil
