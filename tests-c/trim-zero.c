/* Trim and zero, then read zeroes back.
 * nbdkit-args: memory 64M */
#define _GNU_SOURCE
#include "testlib.h"

#define MiB (1024 * 1024)

static void
fill (struct nbd_handle *h, uint64_t off, size_t len)
{
  unsigned char *buf = test_malloc (len);
  test_fill_pattern (buf, len, off, 3);
  /* Make sure no byte of the pattern is zero so "reads as zero" is
   * meaningful. */
  for (size_t i = 0; i < len; ++i)
    buf[i] |= 1;
  CHECK_OK (nbd_pwrite (h, buf, len, off, 0));
  free (buf);
}

static void
expect_zero (struct nbd_handle *h, uint64_t off, size_t len)
{
  unsigned char *buf = test_malloc (len);
  memset (buf, 0xff, len);
  CHECK_OK (nbd_pread (h, buf, len, off, 0));
  if (!test_all_zero (buf, len))
    test_fail ("[%llu, +%zu) does not read as zeroes",
               (unsigned long long) off, len);
  free (buf);
}

static void
expect_nonzero (struct nbd_handle *h, uint64_t off, size_t len)
{
  unsigned char *buf = test_malloc (len);
  CHECK_OK (nbd_pread (h, buf, len, off, 0));
  for (size_t i = 0; i < len; ++i)
    if (buf[i] == 0)
      test_fail ("byte at %llu was zeroed but lies outside the range",
                 (unsigned long long) off + i);
  free (buf);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;

  test_begin ("trim-zero", argc, argv, 1);
  h = test_create_connected (argv[1]);

  CHECK (nbd_can_zero (h) == 1);
  CHECK (nbd_can_trim (h) == 1);

  /* Zero: exact, aligned and unaligned ranges, with and without NO_HOLE
   * and FUA. */
  fill (h, 0, 8 * MiB);
  CHECK_OK (nbd_zero (h, MiB, MiB, 0));
  expect_zero (h, MiB, MiB);
  expect_nonzero (h, 0, MiB);
  expect_nonzero (h, 2 * MiB, MiB);

  CHECK_OK (nbd_zero (h, 1000, 4 * MiB + 12345, LIBNBD_CMD_FLAG_NO_HOLE));
  expect_zero (h, 4 * MiB + 12345, 1000);
  expect_nonzero (h, 4 * MiB + 13345, 4096);
  expect_nonzero (h, 0, 12345);

  if (nbd_can_fua (h) == 1) {
    CHECK_OK (nbd_zero (h, 4096, 6 * MiB, LIBNBD_CMD_FLAG_FUA));
    expect_zero (h, 6 * MiB, 4096);
  }

  /* Trim: the contents of a trimmed range are unspecified in general,
   * but nbdkit's memory plugin (ours and Debian's) deallocates, so it
   * reads as zeroes.  Neighbouring data must be untouched. */
  fill (h, 16 * MiB, 4 * MiB);
  CHECK_OK (nbd_trim (h, 2 * MiB, 17 * MiB, 0));
  expect_zero (h, 17 * MiB, 2 * MiB);
  expect_nonzero (h, 16 * MiB, MiB);
  expect_nonzero (h, 19 * MiB, MiB);

  if (nbd_can_fua (h) == 1)
    CHECK_OK (nbd_trim (h, MiB, 16 * MiB, LIBNBD_CMD_FLAG_FUA));

  /* Zero with FAST_ZERO when advertised. */
  if (nbd_can_fast_zero (h) == 1) {
    int r = nbd_zero (h, MiB, 24 * MiB, LIBNBD_CMD_FLAG_FAST_ZERO);
    /* A server may refuse a fast zero with ENOTSUP; anything else is
     * an error. */
    if (r == -1 && nbd_get_errno () != ENOTSUP)
      test_fail_nbd ("nbd_zero FAST_ZERO");
  }

  /* Cache is advisory; exercise it when advertised. */
  if (nbd_can_cache (h) == 1)
    CHECK_OK (nbd_cache (h, MiB, 0, 0));

  /* Zero to the very end of the disk. */
  {
    int64_t size = nbd_get_size (h);
    if (size == -1) test_fail_nbd ("nbd_get_size");
    fill (h, (uint64_t) size - MiB, MiB);
    CHECK_OK (nbd_zero (h, 65536, (uint64_t) size - 65536, 0));
    expect_zero (h, (uint64_t) size - 65536, 65536);
    expect_nonzero (h, (uint64_t) size - MiB, MiB - 65536);
  }

  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  return test_ok ();
}
