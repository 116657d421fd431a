/* The client library against a misbehaving server (hostile_server.py).
 *
 * For each misbehaviour: the failing call returns -1 with an errno and a
 * message, the handle is dead afterwards (further calls fail, nothing
 * hangs), and no byte outside the caller's buffer is written.
 *
 * Usage: hostile-client PATH/TO/hostile_server.py
 *
 * Debian's libnbd 1.14.2 fails this test on purpose: it reports protocol
 * errors with errno 0 and accepts an export size over 2^63. Ours gives
 * every failure an errno (EPROTO, ECONNRESET) and refuses such a size.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static int failures;

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) {                                        \
      fprintf (stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf (stderr, __VA_ARGS__);                      \
      fprintf (stderr, "\n");                             \
      failures++;                                         \
    }                                                     \
  } while (0)

/* The read buffer sits between two canaries. */
#define CANARY 4096
#define READ_LEN 4096
static unsigned char area[CANARY + READ_LEN + CANARY];

static int
canaries_intact (void)
{
  for (size_t i = 0; i < CANARY; i++)
    if (area[i] != 0xcc || area[CANARY + READ_LEN + i] != 0xcc)
      return 0;
  return 1;
}

static struct nbd_handle *
start (const char *server, const char *mode, int *connect_result)
{
  struct nbd_handle *nbd = nbd_create ();
  if (nbd == NULL) {
    fprintf (stderr, "nbd_create: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  char *argv[] = { "python3", (char *) server, (char *) mode, NULL };
  *connect_result = nbd_connect_command (nbd, argv);
  return nbd;
}

/* Modes that must fail while connecting. */
static void
connect_fails (const char *server, const char *mode)
{
  int r;
  struct nbd_handle *nbd = start (server, mode, &r);
  CHECK (r == -1, "%s: connect succeeded", mode);
  if (r == -1) {
    CHECK (nbd_get_errno () != 0, "%s: no errno", mode);
    CHECK (nbd_get_error () != NULL && strlen (nbd_get_error ()) > 0,
           "%s: no message", mode);
    printf ("  %-18s connect: errno %d: %s\n", mode, nbd_get_errno (),
            nbd_get_error ());
  }
  CHECK (nbd_pread (nbd, area + CANARY, READ_LEN, 0, 0) == -1,
         "%s: read on a failed handle succeeded", mode);
  nbd_close (nbd);
}

static int
count_extents (void *user_data, const char *metacontext, uint64_t offset,
               uint32_t *entries, size_t nr_entries, int *error)
{
  (void) metacontext; (void) offset; (void) entries; (void) error;
  *(size_t *) user_data += nr_entries;
  return 0;
}

/* A block status reply that never ends: the call fails, it does not hang
 * or collect extents for ever. */
static void
block_status_fails (const char *server, const char *mode)
{
  struct nbd_handle *nbd = nbd_create ();
  if (nbd == NULL) exit (EXIT_FAILURE);
  nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION);
  char *argv[] = { "python3", (char *) server, (char *) mode, NULL };
  int r = nbd_connect_command (nbd, argv);
  CHECK (r == 0, "%s: connect failed: %s", mode, nbd_get_error ());
  if (r == 0) {
    size_t seen = 0;
    nbd_extent_callback cb = { .callback = count_extents, .user_data = &seen };
    r = nbd_block_status (nbd, 65536, 0, cb, 0);
    CHECK (r == -1, "%s: block status succeeded", mode);
    if (r == -1)
      printf ("  %-18s block_status: errno %d: %s (after %zu extents)\n",
              mode, nbd_get_errno (), nbd_get_error (), seen);
  }
  nbd_close (nbd);
}

/* Modes that connect and then fail a read. */
static void
read_fails (const char *server, const char *mode)
{
  int r;
  struct nbd_handle *nbd = start (server, mode, &r);
  CHECK (r == 0, "%s: connect failed: %s", mode, nbd_get_error ());
  if (r == 0) {
    memset (area, 0xcc, sizeof area);
    r = nbd_pread (nbd, area + CANARY, READ_LEN, 0, 0);
    CHECK (r == -1, "%s: read succeeded", mode);
    if (r == -1) {
      CHECK (nbd_get_errno () != 0, "%s: no errno", mode);
      printf ("  %-18s pread: errno %d: %s\n", mode, nbd_get_errno (),
              nbd_get_error ());
    }
    CHECK (canaries_intact (), "%s: bytes written outside the buffer", mode);
    /* The handle is dead now: further commands fail at once. */
    CHECK (nbd_pread (nbd, area + CANARY, READ_LEN, 0, 0) == -1,
           "%s: second read succeeded", mode);
    CHECK (canaries_intact (), "%s: bytes written outside the buffer", mode);
  }
  nbd_close (nbd);
}

int
main (int argc, char *argv[])
{
  if (argc != 2) {
    fprintf (stderr, "usage: %s hostile_server.py\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  const char *server = argv[1];

  /* Which libnbd are we testing? */
  Dl_info info;
  const char *expect = getenv ("EXPECT_LIBNBD");
  if (dladdr ((void *) nbd_create, &info) && info.dli_fname) {
    char *have = realpath (info.dli_fname, NULL);
    printf ("  libnbd loaded from %s\n", have ? have : info.dli_fname);
    if (expect) {
      char *want = realpath (expect, NULL);
      CHECK (have && want && strcmp (have, want) == 0,
             "loaded %s, expected %s", have, expect);
      free (want);
    }
    free (have);
  }

  /* A control: the script serves correctly when asked to. */
  int r;
  struct nbd_handle *nbd = start (server, "good", &r);
  CHECK (r == 0, "good: connect failed: %s", nbd_get_error ());
  CHECK (nbd_get_size (nbd) == 1 << 20, "good: wrong size");
  memset (area, 0xcc, sizeof area);
  CHECK (nbd_pread (nbd, area + CANARY, READ_LEN, 0, 0) == 0,
         "good: read failed: %s", nbd_get_error ());
  CHECK (area[CANARY] == 0x5a && area[CANARY + READ_LEN - 1] == 0x5a,
         "good: wrong data");
  CHECK (canaries_intact (), "good: bytes written outside the buffer");
  CHECK (nbd_shutdown (nbd, 0) == 0, "good: shutdown: %s", nbd_get_error ());
  nbd_close (nbd);

  connect_fails (server, "bad-magic");
  connect_fails (server, "truncated");
  connect_fails (server, "huge-size");
  read_fails (server, "hangup-mid-reply");
  read_fails (server, "wrong-cookie");
  read_fails (server, "oversize-chunk");
  read_fails (server, "chunk-outside");
  read_fails (server, "endless-data");
  read_fails (server, "short-chunk");
  block_status_fails (server, "endless-extents");

  if (failures) {
    fprintf (stderr, "hostile-client: %d failure(s)\n", failures);
    exit (EXIT_FAILURE);
  }
  printf ("hostile-client: all misbehaviours handled\n");
  return 0;
}
