/* Return codes with a thread-local error message, as Aeron's C client does:
 * a function that fails returns -1 and leaves the reason in ls_errmsg(). */
#ifndef LS_ERROR_H
#define LS_ERROR_H

#define LS_ERROR_MESSAGE_MAX 512

enum ls_error_code
{
    LS_OK = 0,
    LS_EINVAL = 1,  /* bad argument */
    LS_EFORMAT = 2, /* memory does not hold a valid structure */
    LS_ESTATE = 3   /* operation not allowed in the current state */
};

int ls_errcode(void);
const char *ls_errmsg(void);
void ls_set_error(int code, const char *format, ...) __attribute__((format(printf, 2, 3)));
void ls_clear_error(void);

#endif
