/* A tiny assertion harness for the C unit tests: each check prints where it failed. */
#ifndef LS_TEST_H
#define LS_TEST_H

#include <stdio.h>
#include <stdlib.h>

static int ls_test_failures = 0;

#define LS_CHECK(cond)                                                             \
    do                                                                             \
    {                                                                              \
        if (!(cond))                                                               \
        {                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            ls_test_failures++;                                                    \
        }                                                                          \
    } while (0)

#define LS_RUN(test)                       \
    do                                     \
    {                                      \
        int before = ls_test_failures;     \
        test();                            \
        printf("%s %s\n", ls_test_failures == before ? "ok  " : "FAIL", #test); \
    } while (0)

#define LS_TEST_RESULT() (ls_test_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE)

#endif
