/* Return codes with a thread-local error message, as Aeron's C client does:
 * a function that fails returns -1 (or NULL) and leaves the reason in ls_errmsg().
 *
 * LS_SET_ERR(code, fmt, ...) records a new error (AERON_SET_ERR): the message, and the
 * first line of the trace, "[function, file:line] message". LS_APPEND_ERR(fmt, ...) adds
 * the caller's context to an error a callee set (AERON_APPEND_ERR): one more trace line;
 * the message (the root cause the user is shown) stays. LS_SET_ERRNO(errnum, fmt, ...)
 * records a failed system call: code LS_ESYS, ls_errno() = errnum, ": strerror" appended.
 * ls_set_error(code, fmt, ...) is the older spelling of LS_SET_ERR. */
#ifndef LS_ERROR_H
#define LS_ERROR_H

#define LS_ERROR_MESSAGE_MAX 512
#define LS_ERROR_TRACE_MAX 2048

enum ls_error_code
{
    LS_OK = 0,
    LS_EINVAL = 1,  /* bad argument */
    LS_EFORMAT = 2, /* memory does not hold a valid structure */
    LS_ESTATE = 3,  /* operation not allowed in the current state */
    LS_ESYS = 4     /* a system call failed: ls_errno() says why */
};

int ls_errcode(void);
int ls_errno(void);
const char *ls_errmsg(void);
const char *ls_errtrace(void);
void ls_clear_error(void);

void ls_err_set(int code, int errnum, const char *function, const char *file, int line, const char *format, ...)
    __attribute__((format(printf, 6, 7)));
void ls_err_append(const char *function, const char *file, int line, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

#define LS_SET_ERR(code, ...) ls_err_set((code), 0, __func__, __FILE__, __LINE__, __VA_ARGS__)
#define LS_SET_ERRNO(errnum, ...) ls_err_set(LS_ESYS, (errnum), __func__, __FILE__, __LINE__, __VA_ARGS__)
#define LS_APPEND_ERR(...) ls_err_append(__func__, __FILE__, __LINE__, __VA_ARGS__)
#define ls_set_error(code, ...) LS_SET_ERR(code, __VA_ARGS__)

#endif
