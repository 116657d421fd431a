/* 64 AIO commands in flight at once, driven by our own poll(2) loop on
 * nbd_aio_get_fd / nbd_aio_get_direction / nbd_aio_notify_read/write.
 * nbdkit-args: memory 64M
 *
 * Round 1 writes 64 blocks (a pattern per block) with nbd_aio_pwrite and
 * completion callbacks that auto-retire; round 2 reads them back with
 * nbd_aio_pread, half with callbacks, half retired by
 * nbd_aio_command_completed (in whatever order replies come). Every byte is
 * checked. */
#define _GNU_SOURCE
#include <poll.h>
#include "testlib.h"

#define N 64
#define BLK (64 * 1024)

struct slot {
  unsigned char *buf;
  uint64_t offset;
  int64_t cookie;
  int done;            /* completion callback count */
  int err;
};

static struct slot slots[N];

static int
complete (void *user_data, int *error)
{
  struct slot *s = user_data;
  s->done++;
  s->err = *error;
  return 1;             /* auto-retire */
}

/* Poll once and notify, as nbd_poll would, through the public AIO calls. */
static void
step (struct nbd_handle *h)
{
  struct pollfd pfd;
  int fd = nbd_aio_get_fd (h);
  unsigned dir = nbd_aio_get_direction (h);

  if (fd == -1) test_fail_nbd ("nbd_aio_get_fd");
  pfd.fd = fd;
  pfd.events = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ) pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfd.events |= POLLOUT;
  CHECK (pfd.events != 0);
  pfd.revents = 0;
  if (poll (&pfd, 1, 10000) == -1)
    test_fail ("poll: %s", strerror (errno));
  if (pfd.revents & (POLLIN | POLLHUP))
    CHECK_OK (nbd_aio_notify_read (h));
  else if (pfd.revents & POLLOUT)
    CHECK_OK (nbd_aio_notify_write (h));
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  int i, remaining;

  test_begin ("aio-in-flight", argc, argv, 1);
  h = test_create_connected (argv[1]);
  CHECK (nbd_aio_is_ready (h) == 1);
  CHECK (nbd_aio_in_flight (h) == 0);
  /* Idle and connected: waiting to read (a hang-up would be noticed). */
  CHECK (nbd_aio_get_direction (h) == LIBNBD_AIO_DIRECTION_READ);

  for (i = 0; i < N; ++i) {
    slots[i].buf = test_malloc (BLK);
    /* Scatter the blocks over the disk, not in order. */
    slots[i].offset = (uint64_t) ((i * 37) % N) * BLK * 4;
  }

  /* Round 1: writes, auto-retired by the callback. */
  for (i = 0; i < N; ++i) {
    test_fill_pattern (slots[i].buf, BLK, slots[i].offset, 11);
    slots[i].cookie =
      nbd_aio_pwrite (h, slots[i].buf, BLK, slots[i].offset,
                      (nbd_completion_callback) { .callback = complete,
                                                  .user_data = &slots[i] },
                      0);
    if (slots[i].cookie == -1) test_fail_nbd ("nbd_aio_pwrite");
    CHECK (slots[i].cookie >= 1);
    if (i > 0) CHECK (slots[i].cookie != slots[i - 1].cookie);
  }
  CHECK (nbd_aio_in_flight (h) > 0);
  for (;;) {
    for (remaining = 0, i = 0; i < N; ++i)
      remaining += slots[i].done == 0;
    if (remaining == 0) break;
    step (h);
  }
  for (i = 0; i < N; ++i) {
    CHECK (slots[i].done == 1);
    CHECK (slots[i].err == 0);
    /* Auto-retired: not there to retire again. */
    CHECK (nbd_aio_command_completed (h, (uint64_t) slots[i].cookie) == 0);
  }
  CHECK (nbd_aio_in_flight (h) == 0);

  /* Round 2: reads; odd ones with a callback, even ones retired by hand. */
  for (i = 0; i < N; ++i) {
    memset (slots[i].buf, 0xaa, BLK);
    slots[i].done = 0;
    slots[i].cookie =
      nbd_aio_pread (h, slots[i].buf, BLK, slots[i].offset,
                     (i & 1)
                     ? (nbd_completion_callback) { .callback = complete,
                                                   .user_data = &slots[i] }
                     : NBD_NULL_COMPLETION,
                     0);
    if (slots[i].cookie == -1) test_fail_nbd ("nbd_aio_pread");
  }
  CHECK (nbd_aio_in_flight (h) == N || nbd_aio_in_flight (h) > 0);
  for (;;) {
    int64_t c;
    remaining = 0;
    for (i = 0; i < N; ++i) {
      if (i & 1)
        remaining += slots[i].done == 0;
      else if (slots[i].done == 0) {
        int r = nbd_aio_command_completed (h, (uint64_t) slots[i].cookie);
        if (r == -1) test_fail_nbd ("nbd_aio_command_completed");
        if (r == 1) slots[i].done = 1;
        else remaining++;
      }
    }
    if (remaining == 0) break;
    c = nbd_aio_peek_command_completed (h);
    if (c > 0) continue;   /* something to retire: loop again */
    step (h);
  }
  for (i = 0; i < N; ++i) {
    long long bad = test_check_pattern (slots[i].buf, BLK, slots[i].offset, 11);
    if (bad >= 0)
      test_fail ("block %d at %llu: wrong byte at +%lld", i,
                 (unsigned long long) slots[i].offset, bad);
    CHECK (slots[i].done == 1);
  }
  CHECK (nbd_aio_in_flight (h) == 0);
  /* Nothing in flight, nothing completed: -1. */
  CHECK (nbd_aio_peek_command_completed (h) == -1);

  /* A clean disconnect through the AIO API. */
  CHECK_OK (nbd_aio_disconnect (h, 0));
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h)) {
    if (nbd_aio_get_direction (h) == 0) break;
    step (h);
  }
  CHECK (nbd_aio_is_closed (h) == 1);

  for (i = 0; i < N; ++i) free (slots[i].buf);
  nbd_close (h);
  return test_ok ();
}
