/* aioread: 4 KiB random reads with DEPTH commands in flight through the
 * AIO API (nbd_aio_pread, completion callbacks, nbd_poll), for comparing
 * libraries (ours and Debian's on one server) and servers (ours and
 * Debian's under one library).
 *
 *   aioread SOCKET DEPTH COUNT
 *
 * Reads COUNT blocks at pseudo-random 4 KiB-aligned offsets (a fixed
 * seed, so every run asks for the same blocks), keeping DEPTH in flight,
 * then prints
 *   RESULT op=aioread depth=... ops=... secs=... iops=...
 * Proves which libnbd was loaded like the tests (EXPECT_LIBNBD). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <time.h>
#include "../tests-c/testlib.h"

#define BS 4096

static uint64_t done;
/* Buffer slots not in use by a read in flight, as a stack. */
static uint64_t *free_slots;
static uint64_t nr_free;

static int
completed (void *user_data, int *error)
{
  if (*error) {
    fprintf (stderr, "aioread: read failed: %s\n", strerror (*error));
    exit (EXIT_FAILURE);
  }
  free_slots[nr_free++] = (uintptr_t) user_data;
  done++;
  return 1; /* retire the command */
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  uint64_t depth, count, issued = 0, blocks, x = 0x9e3779b97f4a7c15ULL;
  unsigned char *bufs;
  struct timespec t0, t1;
  double secs;

  test_begin ("aioread", argc, argv, 3);
  depth = strtoull (argv[2], NULL, 0);
  count = strtoull (argv[3], NULL, 0);
  if (depth == 0 || count < depth) test_fail ("bad DEPTH / COUNT");

  h = test_create_connected (argv[1]);
  blocks = (uint64_t) nbd_get_size (h) / BS;
  if (blocks == 0) test_fail ("export smaller than one block");
  /* One buffer per slot; a read's completion hands its slot back. The
   * data is not checked here (the tests do that), only that every read
   * succeeds. */
  bufs = test_malloc (depth * BS);
  free_slots = test_malloc (depth * sizeof *free_slots);
  for (nr_free = 0; nr_free < depth; nr_free++)
    free_slots[nr_free] = nr_free;

  clock_gettime (CLOCK_MONOTONIC, &t0);
  while (done < count) {
    while (issued < count && nr_free > 0) {
      /* xorshift64: cheap and deterministic. */
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      uint64_t off = (x % blocks) * BS;
      uint64_t slot = free_slots[--nr_free];
      nbd_completion_callback cb = { .callback = completed,
                                     .user_data = (void *) (uintptr_t) slot };
      if (nbd_aio_pread (h, bufs + slot * BS, BS, off, cb, 0) == -1)
        test_fail_nbd ("nbd_aio_pread");
      issued++;
    }
    if (nbd_poll (h, -1) == -1)
      test_fail_nbd ("nbd_poll");
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf ("RESULT op=aioread depth=%" PRIu64 " ops=%" PRIu64
          " secs=%.6f iops=%.0f\n", depth, count, secs, count / secs);
  if (nbd_shutdown (h, 0) == -1)
    test_fail_nbd ("nbd_shutdown");
  nbd_close (h);
  free (bufs);
  free (free_slots);
  return test_ok ();
}
