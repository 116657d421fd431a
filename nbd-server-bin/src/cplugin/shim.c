/* The printf-style functions of nbdkit's plugin interface, which stable
 * Rust cannot define (C variadic functions): each formats its message
 * and hands the string to the Rust side (exports.rs). errno is kept as
 * the caller had it, as nbdkit does, so that %m and a following
 * "return -1" with errno_is_preserved both see the plugin's errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

extern void nbdkit_rs_error (const char *msg);
extern void nbdkit_rs_debug (const char *msg);
extern const char *nbdkit_strdup_intern (const char *str);

void
nbdkit_verror (const char *fs, va_list args)
{
  int err = errno;
  char *msg = NULL;
  if (vasprintf (&msg, fs, args) >= 0) {
    nbdkit_rs_error (msg);
    free (msg);
  }
  errno = err;
}

void
nbdkit_error (const char *fs, ...)
{
  va_list args;
  va_start (args, fs);
  nbdkit_verror (fs, args);
  va_end (args);
}

void
nbdkit_vdebug (const char *fs, va_list args)
{
  int err = errno;
  char *msg = NULL;
  if (vasprintf (&msg, fs, args) >= 0) {
    nbdkit_rs_debug (msg);
    free (msg);
  }
  errno = err;
}

void
nbdkit_debug (const char *fs, ...)
{
  va_list args;
  va_start (args, fs);
  nbdkit_vdebug (fs, args);
  va_end (args);
}

const char *
nbdkit_vprintf_intern (const char *fs, va_list args)
{
  char *msg = NULL;
  const char *r;
  if (vasprintf (&msg, fs, args) < 0)
    return NULL;
  r = nbdkit_strdup_intern (msg);
  free (msg);
  return r;
}

const char *
nbdkit_printf_intern (const char *fs, ...)
{
  va_list args;
  const char *r;
  va_start (args, fs);
  r = nbdkit_vprintf_intern (fs, args);
  va_end (args);
  return r;
}
