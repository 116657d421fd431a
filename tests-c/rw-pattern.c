/* Write a pattern, read it back, flush, FUA write.
 * nbdkit-args: memory 64M
 *
 * Written bytes all follow test_pattern_byte(offset, seed 1), so a script can
 * check the image behind a server: [0, 6 MiB) and the last 64 KiB, plus an
 * unaligned 8193-byte run starting at size/2 - 4097.
 *
 * Works against any writable peer: flush and FUA are exercised when the
 * server advertises them, and must be refused (EINVAL) when it does not. */
#define _GNU_SOURCE
#include "testlib.h"

#define MiB (1024 * 1024)
#define SEED 1

static void
write_read (struct nbd_handle *h, uint64_t off, size_t len, uint32_t flags)
{
  unsigned char *buf = test_malloc (len);
  long long bad;

  test_fill_pattern (buf, len, off, SEED);
  CHECK_OK (nbd_pwrite (h, buf, len, off, flags));
  memset (buf, 0xa5, len);
  CHECK_OK (nbd_pread (h, buf, len, off, 0));
  bad = test_check_pattern (buf, len, off, SEED);
  if (bad >= 0)
    test_fail ("read back mismatch at offset %llu (write of %zu at %llu)",
               (unsigned long long) off + bad, len,
               (unsigned long long) off);
  free (buf);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  int64_t size;
  int can_flush, can_fua, ro;

  test_begin ("rw-pattern", argc, argv, 1);
  h = test_create_connected (argv[1]);

  size = nbd_get_size (h);
  if (size == -1) test_fail_nbd ("nbd_get_size");
  if (size < 8 * MiB)
    test_fail ("export too small (%lld bytes), need at least 8 MiB",
               (long long) size);
  ro = nbd_is_read_only (h);
  CHECK (ro == 0);

  write_read (h, 0, 512, 0);                      /* small, aligned */
  write_read (h, 512, MiB - 512, 0);              /* rest of the first MiB */
  write_read (h, 2 * MiB, 4 * MiB, 0);            /* one 4 MiB request */
  write_read (h, (uint64_t) size / 2 - 4097, 8193, 0); /* unaligned */
  write_read (h, (uint64_t) size - 65536, 65536, 0);   /* up to the end */

  /* Read the whole first 6 MiB in one go, as a single 6 MiB request. */
  {
    size_t len = 6 * MiB;
    unsigned char *buf = test_malloc (len);
    long long bad;
    CHECK_OK (nbd_pread (h, buf, len, 0, 0));
    /* [1 MiB, 2 MiB) is written by the FUA step below; check the rest. */
    bad = test_check_pattern (buf, MiB, 0, SEED);
    CHECK (bad == -1);
    bad = test_check_pattern (buf + 2 * MiB, 4 * MiB, 2 * MiB, SEED);
    CHECK (bad == -1);
    free (buf);
  }

  can_flush = nbd_can_flush (h);
  CHECK (can_flush == 0 || can_flush == 1);
  if (can_flush)
    CHECK_OK (nbd_flush (h, 0));
  else
    CHECK_ERR (nbd_flush (h, 0), EINVAL, "nbd_flush");

  can_fua = nbd_can_fua (h);
  CHECK (can_fua == 0 || can_fua == 1);
  if (can_fua)
    write_read (h, MiB, MiB, LIBNBD_CMD_FLAG_FUA);
  else {
    unsigned char *buf = test_malloc (MiB);
    test_fill_pattern (buf, MiB, MiB, SEED);
    CHECK_ERR (nbd_pwrite (h, buf, MiB, MiB, LIBNBD_CMD_FLAG_FUA),
               EINVAL, "nbd_pwrite");
    free (buf);
    write_read (h, MiB, MiB, 0);
  }
  printf ("rw-pattern: size %lld, can_flush %d, can_fua %d\n",
          (long long) size, can_flush, can_fua);

  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
