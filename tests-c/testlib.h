/* Shared helpers for the C tests in tests-c/.
 *
 * Every test program:
 *   - defines _GNU_SOURCE before including anything (dladdr, realpath),
 *   - takes the server's Unix socket path as argv[1] ("tcp:HOST:PORT" is
 *     accepted too, and TEST_EXPORT_NAME in the environment sets the export
 *     name, for other peers) and the path of the nbdkit binary to use for
 *     nbd_connect_command as argv[2],
 *   - calls test_begin() first, which proves which libnbd.so was loaded,
 *   - ends with test_ok(), which prints the "TEST-OK <name>" marker the
 *     harness requires in addition to exit status 0 (so a server whose --run
 *     does not actually run the command cannot make a test pass).
 *
 * Proving our library was loaded: the harness sets EXPECT_LIBNBD to the
 * absolute path of the staged libnbd.so.0.0.0.  test_begin() resolves the
 * file that really provides nbd_create (dladdr + realpath) and fails the test
 * on a mismatch.  When EXPECT_LIBNBD is unset (validating the tests against
 * the real libnbd) it prints a note and continues.  test_is_ours() is true
 * only when EXPECT_LIBNBD is set: checks of deliberate differences from
 * libnbd 1.14.2 (NULL handle/buffer -> EFAULT, where 1.14.2 crashes) run only
 * then.
 *
 * Exit status: 0 pass, 1 fail, 77 skip (with a reason on stdout).
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before including anything"
#endif

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static const char *test_name_ = "test";

/* NULL pointers laundered through volatile objects, so that the real
 * header's nonnull attributes do not turn deliberate NULL arguments into
 * -Werror failures. */
static const char *volatile test_null_str = NULL;
static void *volatile test_null_ptr = NULL;
static struct nbd_handle *volatile test_null_handle = NULL;

static inline void
test_fail (const char *fmt, ...)
{
  va_list ap;
  printf ("FAIL: %s: ", test_name_);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  fflush (stdout);
  exit (EXIT_FAILURE);
}

/* Fail with the library's thread-local error appended. */
#define test_fail_nbd(what)                                             \
  test_fail ("%s failed: %s (errno %d) [%s:%d]", (what),                \
             nbd_get_error () ? nbd_get_error () : "(no message)",      \
             nbd_get_errno (), __FILE__, __LINE__)

/* Assert that a libnbd call succeeded (returned != -1). */
#define CHECK_OK(expr)                                                  \
  do {                                                                  \
    if ((expr) == -1)                                                   \
      test_fail_nbd (#expr);                                            \
  } while (0)

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond))                                                        \
      test_fail ("assertion failed: %s [%s:%d]", #cond,                 \
                 __FILE__, __LINE__);                                   \
  } while (0)

static inline void
test_skip (const char *reason)
{
  printf ("SKIP: %s: %s\n", test_name_, reason);
  fflush (stdout);
  exit (77);
}

static inline bool
test_is_ours (void)
{
  const char *e = getenv ("EXPECT_LIBNBD");
  return e != NULL && *e != '\0';
}

/* Which file provides nbd_create in this process, as a canonical path. */
static inline char *
test_loaded_libnbd (void)
{
  Dl_info info;
  memset (&info, 0, sizeof info);
  if (dladdr ((void *) nbd_create, &info) == 0 || info.dli_fname == NULL)
    return NULL;
  return realpath (info.dli_fname, NULL);
}

static inline void
test_begin (const char *name, int argc, char **argv, int min_args)
{
  const char *expect;
  char *loaded, *want;

  test_name_ = name;
  setvbuf (stdout, NULL, _IOLBF, 0);
  if (argc < min_args + 1)
    test_fail ("usage: %s SOCKET|tcp:HOST:PORT [NBDKIT]", argv[0]);

  loaded = test_loaded_libnbd ();
  if (loaded == NULL)
    test_fail ("cannot tell which library provides nbd_create (dladdr)");
  printf ("%s: libnbd loaded from %s\n", name, loaded);

  expect = getenv ("EXPECT_LIBNBD");
  if (expect == NULL || *expect == '\0')
    printf ("%s: note: EXPECT_LIBNBD unset, not checking which libnbd "
            "was loaded (checks specific to ours are skipped)\n", name);
  else {
    want = realpath (expect, NULL);
    if (want == NULL)
      test_fail ("EXPECT_LIBNBD=%s: %s", expect, strerror (errno));
    if (strcmp (want, loaded) != 0)
      test_fail ("wrong libnbd loaded: %s, expected %s", loaded, want);
    free (want);
  }
  free (loaded);
}

static inline int
test_ok (void)
{
  printf ("TEST-OK %s\n", test_name_);
  fflush (stdout);
  return EXIT_SUCCESS;
}

/* Connect to argv[1]: a Unix socket path, or tcp:HOST:PORT.  The export
 * name is "" unless TEST_EXPORT_NAME is set (nbd-server has no default
 * export). */
static inline int
test_connect (struct nbd_handle *h, const char *target)
{
  const char *exportname = getenv ("TEST_EXPORT_NAME");
  if (exportname != NULL && nbd_set_export_name (h, exportname) == -1)
    return -1;
  if (strncmp (target, "tcp:", 4) == 0) {
    char host[256];
    const char *hp = target + 4;
    const char *colon = strrchr (hp, ':');
    size_t n;
    if (colon == NULL || (n = (size_t) (colon - hp)) >= sizeof host)
      test_fail ("bad target %s (want tcp:HOST:PORT)", target);
    memcpy (host, hp, n);
    host[n] = '\0';
    return nbd_connect_tcp (h, host, colon + 1);
  }
  return nbd_connect_unix (h, target);
}

static inline struct nbd_handle *
test_create_connected (const char *target)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    test_fail_nbd ("nbd_create");
  if (test_connect (h, target) == -1)
    test_fail_nbd ("connect");
  return h;
}

/* Expect a call to have failed with -1, the given errno, and an error
 * message starting with "<call>: ". */
#define CHECK_ERR(expr, want_errno, call)                               \
  test_check_err_ ((long long) (expr), (want_errno), #want_errno,       \
                   (call), #expr, __FILE__, __LINE__)

static inline void
test_check_err_ (long long r, int want, const char *want_name,
                 const char *call, const char *expr,
                 const char *file, int line)
{
  const char *msg = nbd_get_error ();
  int got = nbd_get_errno ();
  size_t n = strlen (call);

  if (r != -1)
    test_fail ("%s returned %lld, expected -1 with %s [%s:%d]",
               expr, r, want_name, file, line);
  if (got != want)
    test_fail ("%s: nbd_get_errno() = %d (%s), expected %s (%d); "
               "message: %s [%s:%d]",
               expr, got, strerror (got), want_name, want,
               msg ? msg : "(null)", file, line);
  if (msg == NULL)
    test_fail ("%s: nbd_get_error() is NULL after a failure [%s:%d]",
               expr, file, line);
  if (strncmp (msg, call, n) != 0 || strncmp (msg + n, ": ", 2) != 0)
    test_fail ("%s: error message \"%s\" does not start with \"%s: \" "
               "[%s:%d]", expr, msg, call, file, line);
}

/* A deterministic pattern that depends on the absolute disk offset, so a
 * read can be checked against it without keeping a copy, and so scripts can
 * verify the bytes in the image file behind the server:
 *   byte at offset o = (o * 7 + (o >> 12) + seed) & 0xff            */
static inline unsigned char
test_pattern_byte (uint64_t off, unsigned seed)
{
  return (unsigned char) ((off * 7 + (off >> 12) + seed) & 0xff);
}

static inline void
test_fill_pattern (void *buf, size_t count, uint64_t offset, unsigned seed)
{
  unsigned char *p = buf;
  size_t i;
  for (i = 0; i < count; ++i)
    p[i] = test_pattern_byte (offset + i, seed);
}

/* Returns the index of the first mismatching byte, or -1. */
static inline long long
test_check_pattern (const void *buf, size_t count, uint64_t offset,
                    unsigned seed)
{
  const unsigned char *p = buf;
  size_t i;
  for (i = 0; i < count; ++i)
    if (p[i] != test_pattern_byte (offset + i, seed))
      return (long long) i;
  return -1;
}

static inline bool
test_all_zero (const void *buf, size_t count)
{
  const unsigned char *p = buf;
  size_t i;
  for (i = 0; i < count; ++i)
    if (p[i] != 0)
      return false;
  return true;
}

static inline void *
test_malloc (size_t n)
{
  void *p = malloc (n);
  if (p == NULL)
    test_fail ("malloc(%zu): %s", n, strerror (errno));
  return p;
}

#endif /* TESTLIB_H */
