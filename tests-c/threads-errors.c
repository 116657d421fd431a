/* nbd_get_error / nbd_get_errno are thread-local: an error raised in one
 * thread is not seen in another.
 * nbdkit-args: memory 64M */
#define _GNU_SOURCE
#include <pthread.h>
#include "testlib.h"

static const char *target;
static pthread_barrier_t barrier;

struct result {
  int errno_after_own;          /* errno seen after our own failure */
  char msg[256];                /* message seen after our own failure */
  int errno_after_other;        /* seen after the other thread failed */
  char msg_after_other[256];
};

static void
save_msg (char *dst, size_t n)
{
  const char *m = nbd_get_error ();
  snprintf (dst, n, "%s", m ? m : "(null)");
}

/* Thread A: fail with ENOTCONN on an unconnected handle, then wait while B
 * fails with something else, then check that A still sees its own error. */
static void *
thread_a (void *arg)
{
  struct result *r = arg;
  struct nbd_handle *h = nbd_create ();
  char b[512];
  if (h == NULL) return NULL;
  if (nbd_pread (h, b, sizeof b, 0, 0) != -1) r->errno_after_own = -1;
  else r->errno_after_own = nbd_get_errno ();
  save_msg (r->msg, sizeof r->msg);
  pthread_barrier_wait (&barrier);   /* 1: A has failed */
  pthread_barrier_wait (&barrier);   /* 2: B has failed */
  r->errno_after_other = nbd_get_errno ();
  save_msg (r->msg_after_other, sizeof r->msg_after_other);
  nbd_close (h);
  return NULL;
}

/* Thread B: connected handle, fail with EINVAL (read past the end). */
static void *
thread_b (void *arg)
{
  struct result *r = arg;
  struct nbd_handle *h = nbd_create ();
  char b[512];
  if (h == NULL) return NULL;
  if (test_connect (h, target) == -1) {
    r->errno_after_own = -2;
    pthread_barrier_wait (&barrier);
    pthread_barrier_wait (&barrier);
    nbd_close (h);
    return NULL;
  }
  pthread_barrier_wait (&barrier);   /* 1: A has failed */
  r->errno_after_other = nbd_get_errno ();  /* A's error must not show */
  save_msg (r->msg_after_other, sizeof r->msg_after_other);
  if (nbd_pwrite (h, b, sizeof b, (uint64_t) nbd_get_size (h), 0) != -1)
    r->errno_after_own = -1;
  else r->errno_after_own = nbd_get_errno ();
  save_msg (r->msg, sizeof r->msg);
  pthread_barrier_wait (&barrier);   /* 2: B has failed */
  nbd_shutdown (h, 0);
  nbd_close (h);
  return NULL;
}

int
main (int argc, char *argv[])
{
  pthread_t ta, tb;
  struct result ra, rb;
  char b[512];
  struct nbd_handle *h;

  test_begin ("threads-errors", argc, argv, 1);
  target = argv[1];
  memset (&ra, 0, sizeof ra);
  memset (&rb, 0, sizeof rb);

  /* The main thread fails first, with EFAULT. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_ERR (nbd_set_export_name (h, test_null_str), EFAULT,
             "nbd_set_export_name");

  if (pthread_barrier_init (&barrier, NULL, 2) != 0)
    test_fail ("pthread_barrier_init");
  if (pthread_create (&ta, NULL, thread_a, &ra) != 0 ||
      pthread_create (&tb, NULL, thread_b, &rb) != 0)
    test_fail ("pthread_create");
  pthread_join (ta, NULL);
  pthread_join (tb, NULL);

  printf ("A: own errno %d \"%s\"; after B failed: errno %d \"%s\"\n",
          ra.errno_after_own, ra.msg, ra.errno_after_other,
          ra.msg_after_other);
  printf ("B: own errno %d \"%s\"; after A failed: errno %d \"%s\"\n",
          rb.errno_after_own, rb.msg, rb.errno_after_other,
          rb.msg_after_other);

  CHECK (rb.errno_after_own != -2);     /* B connected */
  CHECK (ra.errno_after_own == ENOTCONN);
  CHECK (strncmp (ra.msg, "nbd_pread: ", 11) == 0);
  CHECK (rb.errno_after_own == ENOSPC);
  CHECK (strncmp (rb.msg, "nbd_pwrite: ", 12) == 0);
  /* A still sees its own error after B failed. */
  CHECK (ra.errno_after_other == ENOTCONN);
  CHECK (strcmp (ra.msg_after_other, ra.msg) == 0);
  /* B, before failing itself, saw neither A's nor main's error. */
  CHECK (rb.errno_after_other != ENOTCONN);
  CHECK (rb.errno_after_other != EFAULT);
  CHECK (strncmp (rb.msg_after_other, "nbd_pread", 9) != 0);
  CHECK (strncmp (rb.msg_after_other, "nbd_set_export_name", 19) != 0);

  /* The main thread still sees its own EFAULT. */
  CHECK (nbd_get_errno () == EFAULT);
  CHECK (strncmp (nbd_get_error (), "nbd_set_export_name: ", 21) == 0);

  /* And a new failure in main replaces it. */
  CHECK_ERR (nbd_pread (h, b, sizeof b, 0, 0), ENOTCONN, "nbd_pread");
  nbd_close (h);
  pthread_barrier_destroy (&barrier);
  return test_ok ();
}
