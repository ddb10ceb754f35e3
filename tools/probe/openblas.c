#include <cblas.h>
int main(void) {
    float a = 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1, &a, 1, &a, 1, 0, &a, 1);
    return 0;
}
