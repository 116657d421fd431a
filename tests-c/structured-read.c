/* nbd_pread_structured: the chunk callback sees each piece of the reply
 * as the part of the caller's buffer it filled, with LIBNBD_READ_DATA or
 * LIBNBD_READ_HOLE, and together the chunks cover the request exactly.
 * nbdkit-args: memory 1M
 *
 * The disk has data in [0, 64K) and a hole in [64K, 128K). Servers may
 * answer with one data chunk or with data and hole chunks: both are
 * checked against the bytes. Then: a chunk callback that fails with
 * *error = EIO fails the whole read with EIO, and without structured
 * replies the whole buffer arrives as one data chunk. */
#define _GNU_SOURCE
#include "testlib.h"

#define K 1024
#define LEN (128 * K)

static unsigned char buf[LEN];
static unsigned char covered[LEN];
static int chunks, holes, bad;

static int
chunk (void *user_data, const void *subbuf, size_t count, uint64_t offset,
       unsigned status, int *error)
{
  const unsigned char *p = subbuf;
  uint64_t base = *(uint64_t *) user_data;
  size_t i;

  (void) error;
  chunks++;
  if (offset < base || offset + count > base + LEN ||
      p != buf + (offset - base)) {
    bad++;
    return 0;
  }
  for (i = 0; i < count; ++i) {
    uint64_t o = offset + i;
    if (covered[o - base]++) bad++;                 /* overlap */
    if (status == LIBNBD_READ_HOLE) {
      if (p[i] != 0) bad++;
    } else if (status == LIBNBD_READ_DATA) {
      unsigned char want = o < 64 * K ? test_pattern_byte (o, 5) : 0;
      if (p[i] != want) bad++;
    } else
      bad++;
  }
  if (status == LIBNBD_READ_HOLE) holes++;
  return 0;
}

static int
failing_chunk (void *user_data, const void *subbuf, size_t count,
               uint64_t offset, unsigned status, int *error)
{
  (void) user_data; (void) subbuf; (void) count; (void) offset;
  (void) status;
  *error = EIO;
  return -1;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  uint64_t base = 0;
  unsigned char *data = test_malloc (64 * K);

  test_begin ("structured-read", argc, argv, 1);
  h = test_create_connected (argv[1]);
  CHECK (nbd_get_structured_replies_negotiated (h) == 1);
  test_fill_pattern (data, 64 * K, 0, 5);
  CHECK_OK (nbd_pwrite (h, data, 64 * K, 0, 0));

  memset (buf, 0xee, sizeof buf);
  CHECK_OK (nbd_pread_structured (h, buf, LEN, base,
                                  (nbd_chunk_callback) { .callback = chunk,
                                                         .user_data = &base },
                                  0));
  if (bad) test_fail ("%d bad bytes or chunks", bad);
  CHECK (chunks >= 1);
  for (size_t i = 0; i < LEN; ++i)
    if (covered[i] != 1) test_fail ("byte %zu covered %d times", i, covered[i]);
  printf ("structured-read: %d chunks, %d holes\n", chunks, holes);

  /* An unaligned read inside the data. */
  memset (covered, 0, sizeof covered);
  chunks = holes = 0;
  base = 1000;
  CHECK_OK (nbd_pread_structured (h, buf, LEN - 2000, base,
                                  (nbd_chunk_callback) { .callback = chunk,
                                                         .user_data = &base },
                                  0));
  if (bad) test_fail ("%d bad bytes or chunks (offset 1000)", bad);
  for (size_t i = 0; i < LEN - 2000; ++i)
    if (covered[i] != 1) test_fail ("byte %zu covered %d times", i, covered[i]);

  /* The chunk callback's error becomes the read's. */
  CHECK_ERR (nbd_pread_structured (h, buf, 4096, 0,
                                   (nbd_chunk_callback) {
                                     .callback = failing_chunk },
                                   0),
             EIO, "nbd_pread_structured");
  /* The connection is still usable. */
  CHECK_OK (nbd_pread (h, buf, 4096, 0, 0));
  nbd_close (h);

  /* Without structured replies: one data chunk for the whole buffer. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_set_request_structured_replies (h, false));
  CHECK (nbd_get_request_structured_replies (h) == 0);
  if (test_connect (h, argv[1]) == -1) test_fail_nbd ("connect");
  CHECK (nbd_get_structured_replies_negotiated (h) == 0);
  memset (covered, 0, sizeof covered);
  chunks = holes = 0;
  base = 0;
  CHECK_OK (nbd_pread_structured (h, buf, LEN, 0,
                                  (nbd_chunk_callback) { .callback = chunk,
                                                         .user_data = &base },
                                  0));
  CHECK (bad == 0 && chunks == 1 && holes == 0);
  nbd_close (h);
  free (data);
  return test_ok ();
}
