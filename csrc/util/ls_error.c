#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/ls_error.h"

static _Thread_local int ls_error_code = LS_OK;
static _Thread_local int ls_error_errno = 0;
static _Thread_local char ls_error_message[LS_ERROR_MESSAGE_MAX];
static _Thread_local char ls_error_trace[LS_ERROR_TRACE_MAX];

int ls_errcode(void)
{
    return ls_error_code;
}

int ls_errno(void)
{
    return ls_error_errno;
}

const char *ls_errmsg(void)
{
    return ls_error_message;
}

const char *ls_errtrace(void)
{
    return ls_error_trace;
}

void ls_clear_error(void)
{
    ls_error_code = LS_OK;
    ls_error_errno = 0;
    ls_error_message[0] = '\0';
    ls_error_trace[0] = '\0';
}

static const char *ls_err_basename(const char *file)
{
    const char *slash = strrchr(file, '/');
    return NULL == slash ? file : slash + 1;
}

/* Adds "[function, file:line] text" to the trace, a new line unless it is the first. */
static void ls_err_trace_line(const char *function, const char *file, int line, const char *text)
{
    const size_t used = strlen(ls_error_trace);
    if (used + 1 < sizeof(ls_error_trace))
    {
        snprintf(
            ls_error_trace + used, sizeof(ls_error_trace) - used, "%s[%s, %s:%d] %s", used > 0 ? "\n" : "",
            function, ls_err_basename(file), line, text);
    }
}

void ls_err_set(int code, int errnum, const char *function, const char *file, int line, const char *format, ...)
{
    /* Formatted aside first: the arguments may include ls_errmsg() itself. */
    char text[LS_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof(text), format, args);
    va_end(args);
    if (LS_ESYS == code)
    {
        const size_t used = strlen(text);
        snprintf(text + used, sizeof(text) - used, ": %s", strerror(errnum));
    }
    memcpy(ls_error_message, text, sizeof(text));
    ls_error_code = LS_OK == code ? LS_ESTATE : code; /* a failure is never "OK" */
    ls_error_errno = errnum;
    ls_error_trace[0] = '\0';
    ls_err_trace_line(function, file, line, text);
}

void ls_err_append(const char *function, const char *file, int line, const char *format, ...)
{
    char text[LS_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof(text), format, args);
    va_end(args);
    if (LS_OK == ls_error_code)
    {
        /* Nothing was set below (a bug there): the context is all there is to tell. */
        ls_err_set(LS_ESTATE, 0, function, file, line, "%s (no cause recorded)", text);
        return;
    }
    ls_err_trace_line(function, file, line, text);
}
