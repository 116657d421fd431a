/* Meta contexts and nbd_block_status on a sparse memory disk: the written
 * area is data, the rest reads as hole|zero in base:allocation.
 * nbdkit-args: memory 1M
 *
 * Also: the meta context list calls (add/get/nr/clear), nbd_can_meta_context
 * after connecting, the extent callback's arguments, LIBNBD_CMD_FLAG_REQ_ONE,
 * an extent callback error failing the call, and ENOTSUP for block status
 * without a negotiated context. */
#define _GNU_SOURCE
#include "testlib.h"

#define K 1024
#define SIZE (1024 * K)

struct seen {
  uint64_t offset;       /* request offset */
  int calls;
  int bad;
  uint64_t covered;      /* bytes described */
  uint32_t flags_at[SIZE / (4 * K)];   /* flags per 4K block */
  size_t max_entries;
};

static int
extent (void *user_data, const char *metacontext, uint64_t offset,
        uint32_t *entries, size_t nr_entries, int *error)
{
  struct seen *s = user_data;
  uint64_t o = offset;
  size_t i;

  (void) error;
  s->calls++;
  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 ||
      offset != s->offset || nr_entries == 0 || nr_entries % 2 != 0) {
    s->bad++;
    return 0;
  }
  if (nr_entries / 2 > s->max_entries) s->max_entries = nr_entries / 2;
  for (i = 0; i < nr_entries; i += 2) {
    uint32_t len = entries[i], flags = entries[i + 1];
    for (uint64_t b = o; b < o + len && b < SIZE; b += 4 * K)
      s->flags_at[b / (4 * K)] = flags | 0x100;   /* 0x100: seen */
    o += len;
  }
  s->covered = o - offset;
  return 0;
}

static int
failing_extent (void *user_data, const char *metacontext, uint64_t offset,
                uint32_t *entries, size_t nr_entries, int *error)
{
  (void) user_data; (void) metacontext; (void) offset; (void) entries;
  (void) nr_entries;
  *error = EPERM;
  return -1;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  static struct seen s;
  unsigned char *data = test_malloc (64 * K);
  char *name;

  test_begin ("block-status", argc, argv, 1);

  /* Without a context: ENOTSUP. */
  h = test_create_connected (argv[1]);
  CHECK (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0);
  CHECK_ERR (nbd_block_status (h, 4096, 0,
                               (nbd_extent_callback) { .callback = extent,
                                                       .user_data = &s },
                               0),
             ENOTSUP, "nbd_block_status");
  nbd_close (h);

  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_get_nr_meta_contexts (h) == 0);
  CHECK_OK (nbd_add_meta_context (h, "x-test:nothing"));
  CHECK_OK (nbd_clear_meta_contexts (h));
  CHECK (nbd_get_nr_meta_contexts (h) == 0);
  CHECK_OK (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  CHECK (nbd_get_nr_meta_contexts (h) == 1);
  name = nbd_get_meta_context (h, 0);
  CHECK (name != NULL && strcmp (name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0);
  free (name);
  CHECK_ERR (nbd_get_meta_context (h, 1) == NULL ? -1 : 0, EINVAL,
             "nbd_get_meta_context");
  if (test_connect (h, argv[1]) == -1) test_fail_nbd ("connect");
  CHECK (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1);
  CHECK (nbd_can_meta_context (h, "x-test:nothing") == 0);

  /* Data in [64K, 128K), nothing else written. */
  test_fill_pattern (data, 64 * K, 64 * K, 9);
  for (size_t i = 0; i < 64 * K; ++i) data[i] |= 1;
  CHECK_OK (nbd_pwrite (h, data, 64 * K, 64 * K, 0));

  /* The whole disk, possibly over several calls. */
  for (uint64_t off = 0; off < SIZE; ) {
    s.offset = off;
    s.covered = 0;
    CHECK_OK (nbd_block_status (h, SIZE - off, off,
                                (nbd_extent_callback) { .callback = extent,
                                                        .user_data = &s },
                                0));
    CHECK (s.bad == 0 && s.covered > 0);
    off += s.covered;
  }
  for (uint64_t b = 0; b < SIZE / (4 * K); ++b) {
    uint32_t f = s.flags_at[b];
    CHECK (f & 0x100);
    f &= ~0x100u;
    if (b >= 16 && b < 32) {
      if (f & LIBNBD_STATE_HOLE)
        test_fail ("written block %llu reported as a hole (flags %u)",
                   (unsigned long long) b, f);
    }
    else if (f != (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO))
      test_fail ("unwritten block %llu has flags %u, expected hole|zero",
                 (unsigned long long) b, f);
  }

  /* REQ_ONE: a single extent. */
  s.offset = 0;
  s.max_entries = 0;
  CHECK_OK (nbd_block_status (h, SIZE, 0,
                              (nbd_extent_callback) { .callback = extent,
                                                      .user_data = &s },
                              LIBNBD_CMD_FLAG_REQ_ONE));
  CHECK (s.bad == 0 && s.max_entries == 1);

  /* The extent callback's error is the call's. */
  CHECK_ERR (nbd_block_status (h, SIZE, 0,
                               (nbd_extent_callback) {
                                 .callback = failing_extent },
                               0),
             EPERM, "nbd_block_status");
  CHECK (nbd_aio_is_ready (h) == 1);
  nbd_close (h);
  free (data);
  return test_ok ();
}
