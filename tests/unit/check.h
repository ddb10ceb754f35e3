// check.h — a tiny TAP test harness for the C unit tests.
//
//   TEST(name) { CHECK(cond); CHECK_NEAR(a, b, tol); }
//   int main(void) { RUN(name); ...; return check_summary(); }
//
// Each test prints "ok N - name" or "not ok N - name" (with the failed checks as "#"
// comments before it); tests/run.sh counts those lines over every suite. The binary
// exits non-zero if any check failed, so a failure can never pass silently.
#ifndef MT_CHECK_H
#define MT_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failed_in_test, check_tests_run, check_tests_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            check_failed_in_test++;                                              \
        }                                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double check_a_ = (a), check_b_ = (b);                                   \
        if (!(fabs(check_a_ - check_b_) <= (tol))) {                             \
            printf("# %s:%d: %s = %.9g, %s = %.9g, |diff| %.3g > %.3g\n",        \
                   __FILE__, __LINE__, #a, check_a_, #b, check_b_,               \
                   fabs(check_a_ - check_b_), (double)(tol));                    \
            check_failed_in_test++;                                              \
        }                                                                        \
    } while (0)

#define TEST(name) static void name(void)
#define RUN(name)                                                                \
    do {                                                                         \
        check_failed_in_test = 0;                                                \
        name();                                                                  \
        check_tests_run++;                                                       \
        if (check_failed_in_test) check_tests_failed++;                          \
        printf("%sok %d - %s\n", check_failed_in_test ? "not " : "",             \
               check_tests_run, #name);                                          \
        fflush(stdout);                                                          \
    } while (0)

// 1 when files a and b both open and hold the same bytes (outputs compared byte for byte).
static inline int same_file(const char *a, const char *b) {
    FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
    int same = f && g, x = 0, y = 0;
    while (same && (x = fgetc(f)) == (y = fgetc(g)) && x != EOF) {}
    same = same && x == y;
    if (f) fclose(f);
    if (g) fclose(g);
    return same;
}

static inline int check_summary(void) {
    printf("1..%d\n", check_tests_run);
    return check_tests_failed ? 1 : 0;
}
#endif
