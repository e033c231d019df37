#include <stdarg.h>
#include <stdio.h>

#include "ls_error.h"

static _Thread_local int ls_error_code = LS_OK;
static _Thread_local char ls_error_message[LS_ERROR_MESSAGE_MAX];

int ls_errcode(void)
{
    return ls_error_code;
}

const char *ls_errmsg(void)
{
    return ls_error_message;
}

void ls_set_error(int code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(ls_error_message, sizeof(ls_error_message), format, args);
    va_end(args);
    ls_error_code = code;
}

void ls_clear_error(void)
{
    ls_error_code = LS_OK;
    ls_error_message[0] = '\0';
}
