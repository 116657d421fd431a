/* Callback bookkeeping of the AIO calls (libnbd(3) "CALLBACKS"):
 *   - every free function is called exactly once, after the last call of
 *     its callback, mid-command free before completion free; a command
 *     not retired by its completion keeps its callbacks until
 *     nbd_aio_command_completed retires it (peer-observed in 1.14.2);
 *   - a call refused before anything is sent runs its frees and never
 *     calls the completion;
 *   - a completion returning 1 retires the command; otherwise
 *     nbd_aio_command_completed retires it, with the error the server (or
 *     the callbacks, through int *error and -1) gave;
 *   - nbd_aio_peek_command_completed and unknown cookies;
 *   - a handle closed with commands in flight frees their callbacks.
 * nbdkit-args: memory 1M
 *
 * Ours only (EXPECT_LIBNBD set), because libnbd 1.14.2 crashes or
 * deadlocks there: a NULL handle still frees the callbacks (EFAULT), and a
 * callback calling back into its own handle gets EDEADLK. */
#define _GNU_SOURCE
#include "testlib.h"

/* One record per callback struct handed to libnbd. */
struct rec {
  const char *name;
  int calls;          /* callback calls */
  int frees;          /* free calls */
  int calls_at_free;  /* calls seen when freed */
  int seq_free;       /* global order of the free */
  int ret;            /* what the completion returns */
  int set_error;      /* if non-zero: assign into *error and return -1 */
  int last_error;     /* *error at the last call */
  struct nbd_handle *h; /* call back into this handle, if set */
  int reentry_errno;
};

static int seq;

static void
rec_free (void *p)
{
  struct rec *r = p;
  r->frees++;
  r->calls_at_free = r->calls;
  r->seq_free = ++seq;
}

static int
completion (void *p, int *error)
{
  struct rec *r = p;
  r->calls++;
  r->last_error = *error;
  if (r->h) {
    /* Calling into the same handle from its callback. */
    if (nbd_aio_in_flight (r->h) == -1)
      r->reentry_errno = nbd_get_errno ();
  }
  if (r->set_error) {
    *error = r->set_error;
    return -1;
  }
  return r->ret;
}

static int
chunk (void *p, const void *subbuf, size_t count, uint64_t offset,
       unsigned status, int *error)
{
  struct rec *r = p;
  (void) subbuf; (void) count; (void) offset; (void) status; (void) error;
  r->calls++;
  return 0;
}

static nbd_completion_callback
ccb (struct rec *r)
{
  return (nbd_completion_callback) { .callback = completion, .user_data = r,
                                     .free = rec_free };
}

static void
run_until_done (struct nbd_handle *h, struct rec *r)
{
  while (r->calls == 0)
    if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll");
}

static void
expect_once (struct rec *r, int calls)
{
  if (r->frees != 1)
    test_fail ("%s: freed %d times, expected once", r->name, r->frees);
  if (r->calls != calls || r->calls_at_free != calls)
    test_fail ("%s: %d calls (%d before the free), expected %d", r->name,
               r->calls, r->calls_at_free, calls);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char buf[512];
  int64_t c, c2;

  test_begin ("aio-callbacks", argc, argv, 1);
  h = test_create_connected (argv[1]);

  /* 1. Auto-retired read: callback once, then free once. */
  {
    struct rec r = { .name = "auto-retire", .ret = 1 };
    c = nbd_aio_pread (h, buf, sizeof buf, 0, ccb (&r), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread");
    CHECK (r.frees == 0);
    run_until_done (h, &r);
    expect_once (&r, 1);
    CHECK (r.last_error == 0);
    /* Retired: unknown now, which 1.14.2 reports as 0 (not done). */
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == 0);
  }

  /* 2. Not retired by the callback: nbd_aio_command_completed does it,
   *    and peek shows it first. */
  {
    struct rec r = { .name = "manual-retire", .ret = 0 };
    c = nbd_aio_pread (h, buf, sizeof buf, 512, ccb (&r), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread");
    /* Sent, but nobody has read the reply yet. */
    CHECK (nbd_aio_peek_command_completed (h) == 0);
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == 0);
    run_until_done (h, &r);
    CHECK (r.calls == 1 && r.frees == 0);
    CHECK (nbd_aio_peek_command_completed (h) == c);
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == 1);
    expect_once (&r, 1);
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == 0);
    CHECK (nbd_aio_peek_command_completed (h) == -1);
  }

  /* 3. Structured read with both callbacks: chunk free before the
   *    completion free, both after the completion ran. */
  {
    struct rec rc = { .name = "chunk" };
    struct rec r = { .name = "completion", .ret = 1 };
    c = nbd_aio_pread_structured (h, buf, sizeof buf, 0,
                                  (nbd_chunk_callback) { .callback = chunk,
                                                         .user_data = &rc,
                                                         .free = rec_free },
                                  ccb (&r), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread_structured");
    run_until_done (h, &r);
    expect_once (&r, 1);
    CHECK (rc.frees == 1 && rc.calls >= 1);
    CHECK (rc.seq_free < r.seq_free);
  }

  /* 4. Refused before sending (out of bounds, strict mode): -1 EINVAL,
   *    frees once, the callbacks never. */
  {
    struct rec rc = { .name = "refused-chunk" };
    struct rec r = { .name = "refused-completion", .ret = 1 };
    CHECK_ERR (nbd_aio_pread_structured (h, buf, sizeof buf, 1024 * 1024,
                                         (nbd_chunk_callback) {
                                           .callback = chunk,
                                           .user_data = &rc,
                                           .free = rec_free },
                                         ccb (&r), 0),
               EINVAL, "nbd_aio_pread_structured");
    expect_once (&rc, 0);
    expect_once (&r, 0);
    CHECK (rc.seq_free < r.seq_free);
    /* An invalid flag is refused the same way. */
    r.frees = 0;
    CHECK_ERR (nbd_aio_flush (h, ccb (&r), 0x10000), EINVAL, "nbd_aio_flush");
    expect_once (&r, 0);
  }

  /* 5. A command the server fails (strict bounds off): the completion
   *    sees the errno, and nbd_aio_command_completed reports it. */
  {
    struct rec r = { .name = "server-error", .ret = 0 };
    CHECK_OK (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_BOUNDS));
    c = nbd_aio_pread (h, buf, sizeof buf, 1024 * 1024, ccb (&r), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread past the end, strict off");
    CHECK_OK (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK));
    run_until_done (h, &r);
    CHECK (r.calls == 1 && r.frees == 0);
    CHECK (r.last_error != 0);
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == -1);
    expect_once (&r, 1);
    CHECK (nbd_get_errno () == r.last_error);
    CHECK (nbd_aio_is_ready (h) == 1);  /* the connection is fine */
  }

  /* 6. int *error from the completion: a successful read made to fail. */
  {
    struct rec r = { .name = "set-error", .set_error = EPROTO };
    c = nbd_aio_pread (h, buf, sizeof buf, 0, ccb (&r), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread");
    run_until_done (h, &r);
    CHECK (r.calls == 1 && r.frees == 0);
    CHECK (r.last_error == 0);
    CHECK (nbd_aio_command_completed (h, (uint64_t) c) == -1);
    expect_once (&r, 1);
    CHECK (nbd_get_errno () == EPROTO);
  }

  /* 7. NULL completion with a free function: the free still runs once. */
  {
    struct rec r = { .name = "null-callback" };
    c = nbd_aio_flush (h, (nbd_completion_callback) { .callback = NULL,
                                                       .user_data = &r,
                                                       .free = rec_free }, 0);
    if (c == -1) test_fail_nbd ("nbd_aio_flush");
    while (nbd_aio_command_completed (h, (uint64_t) c) == 0)
      if (nbd_poll (h, -1) == -1) test_fail_nbd ("nbd_poll");
    expect_once (&r, 0);
  }

  /* 8. Ours only: a NULL handle still frees; a callback calling into its
   *    own handle gets EDEADLK (libnbd 1.14.2 crashes / deadlocks). */
  if (test_is_ours ()) {
    struct rec r = { .name = "null-handle" };
    CHECK_ERR (nbd_aio_pread (test_null_handle, buf, sizeof buf, 0, ccb (&r), 0),
               EFAULT, "nbd_aio_pread");
    expect_once (&r, 0);
    struct rec re = { .name = "reentry", .ret = 1, .h = h };
    c = nbd_aio_pread (h, buf, sizeof buf, 0, ccb (&re), 0);
    if (c == -1) test_fail_nbd ("nbd_aio_pread");
    run_until_done (h, &re);
    expect_once (&re, 1);
    CHECK (re.reentry_errno == EDEADLK);
  }

  /* 9. Closing with commands in flight: frees once, completions never
   *    (libnbd frees without calling them). */
  {
    struct rec r1 = { .name = "close-1", .ret = 1 };
    struct rec r2 = { .name = "close-2", .ret = 1 };
    c = nbd_aio_pread (h, buf, sizeof buf, 0, ccb (&r1), 0);
    c2 = nbd_aio_pwrite (h, buf, sizeof buf, 4096, ccb (&r2), 0);
    if (c == -1 || c2 == -1) test_fail_nbd ("aio before close");
    CHECK (c2 > c);
    nbd_close (h);
    CHECK (r1.frees == 1 && r2.frees == 1);
    CHECK (r1.calls <= 1 && r2.calls <= 1);
  }

  return test_ok ();
}
