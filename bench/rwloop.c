/* rwloop: synchronous nbd_pread / nbd_pwrite loop, for comparing our
 * libnbd with Debian's against the same server.
 *
 *   rwloop SOCKET pread|pwrite BLOCKSIZE TOTALBYTES
 *
 * Walks the export sequentially (wrapping at the end) in BLOCKSIZE
 * requests until TOTALBYTES have been transferred, then prints
 *   RESULT op=... bs=... bytes=... secs=... MBps=... iops=...
 * Proves which libnbd was loaded like the tests (EXPECT_LIBNBD). */
#define _GNU_SOURCE
#include <time.h>
#include "../tests-c/testlib.h"

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  int is_write;
  size_t bs;
  uint64_t total, done = 0, off = 0, size, ops = 0;
  unsigned char *buf;
  struct timespec t0, t1;
  double secs;

  test_begin ("rwloop", argc, argv, 4);
  is_write = strcmp (argv[2], "pwrite") == 0;
  bs = strtoull (argv[3], NULL, 0);
  total = strtoull (argv[4], NULL, 0);
  if (bs == 0 || total < bs) test_fail ("bad BLOCKSIZE / TOTALBYTES");

  h = test_create_connected (argv[1]);
  size = (uint64_t) nbd_get_size (h);
  if (size < bs) test_fail ("export smaller than one block");
  size -= size % bs;
  buf = test_malloc (bs);
  test_fill_pattern (buf, bs, 0, 9);

  clock_gettime (CLOCK_MONOTONIC, &t0);
  while (done < total) {
    int r = is_write ? nbd_pwrite (h, buf, bs, off, 0)
                     : nbd_pread (h, buf, bs, off, 0);
    if (r == -1) test_fail_nbd (argv[2]);
    done += bs;
    ops++;
    off += bs;
    if (off >= size) off = 0;
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  secs = (double) (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;

  printf ("RESULT op=%s bs=%zu bytes=%llu secs=%.6f MBps=%.1f iops=%.0f\n",
          argv[2], bs, (unsigned long long) done, secs,
          (double) done / secs / 1e6, (double) ops / secs);
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (buf);
  return test_ok ();
}
