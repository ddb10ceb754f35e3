// cpu.h — pieces of the CPU backend shared between lib/cpu/*.c.
#ifndef MT_CPU_H
#define MT_CPU_H

// C[M,N] = alpha * op(A) @ op(B) + beta * C (row-major); see mt_backend.gemm.
void mt_cpu_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
// The plain-C blocked GEMM, always compiled so tests can compare it with BLAS.
void mt_cpu_gemm_plain(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);
#endif
