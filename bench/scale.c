/* scale: what a server pays as connections grow. CONNS connections, each
 * keeping DEPTH 4 KiB random reads in flight through the AIO API, all
 * driven by one poll(2) loop over the handles' descriptors
 * (nbd_aio_get_fd, nbd_aio_get_direction, nbd_aio_notify_read/write).
 *
 *   scale SOCKET CONNS DEPTH COUNT SERVER_PID
 *
 * COUNT reads in all, spread over the connections. SERVER_PID is the
 * process serving SOCKET: its resident memory (VmRSS) is read before
 * connecting, with every connection open and idle, and in the middle of
 * the run; its CPU time (utime + stime, all threads) over the timed run.
 * Prints
 *   RESULT op=scale conns=... depth=... ops=... secs=... iops=...
 *          srv_us_per_req=... rss_base_kib=... rss_idle_kib=... rss_busy_kib=...
 * Proves which libnbd was loaded like the tests (EXPECT_LIBNBD). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include "../tests-c/testlib.h"

#define BS 4096

struct conn {
  struct nbd_handle *h;
  unsigned char *bufs;     /* DEPTH buffers of BS bytes */
  uint64_t *free_slots;    /* slots not used by a read in flight (a stack) */
  uint64_t nr_free;
  uint64_t x;              /* the connection's xorshift64 state */
};

static uint64_t done;

struct slot_ref {
  struct conn *c;
  uint64_t slot;
};

static int
completed (void *user_data, int *error)
{
  struct slot_ref *r = user_data;

  if (*error) {
    fprintf (stderr, "scale: read failed: %s\n", strerror (*error));
    exit (EXIT_FAILURE);
  }
  r->c->free_slots[r->c->nr_free++] = r->slot;
  done++;
  return 1;
}

/* VmRSS of PID in KiB, or -1. */
static long
rss_kib (long pid)
{
  char path[64], line[256];
  long kib = -1;
  FILE *f;

  snprintf (path, sizeof path, "/proc/%ld/status", pid);
  f = fopen (path, "r");
  if (f == NULL) return -1;
  while (fgets (line, sizeof line, f))
    if (sscanf (line, "VmRSS: %ld kB", &kib) == 1)
      break;
  fclose (f);
  return kib;
}

/* utime + stime of PID (every thread) in clock ticks, or -1. */
static long long
cpu_ticks (long pid)
{
  char path[64], buf[1024], *p;
  unsigned long long ut, st;
  FILE *f;
  size_t n;

  snprintf (path, sizeof path, "/proc/%ld/stat", pid);
  f = fopen (path, "r");
  if (f == NULL) return -1;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = 0;
  /* The command name may hold spaces: fields restart after the last ')'.
   * utime and stime are fields 14 and 15, the 12th and 13th after it. */
  p = strrchr (buf, ')');
  if (p == NULL) return -1;
  if (sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
              &ut, &st) != 2)
    return -1;
  return (long long) (ut + st);
}

int
main (int argc, char *argv[])
{
  uint64_t nconns, depth, count, issued = 0, blocks, i;
  long pid, rss_base, rss_idle, rss_busy = -1;
  long long t0c, t1c;
  struct conn *conns;
  struct slot_ref *refs;
  struct pollfd *pfds;
  struct timespec t0, t1;
  double secs;

  test_begin ("scale", argc, argv, 5);
  nconns = strtoull (argv[2], NULL, 0);
  depth = strtoull (argv[3], NULL, 0);
  count = strtoull (argv[4], NULL, 0);
  pid = strtol (argv[5], NULL, 0);
  if (nconns == 0 || depth == 0 || count < nconns * depth)
    test_fail ("bad CONNS / DEPTH / COUNT");

  rss_base = rss_kib (pid);
  conns = test_malloc (nconns * sizeof *conns);
  refs = test_malloc (nconns * depth * sizeof *refs);
  pfds = test_malloc (nconns * sizeof *pfds);
  for (i = 0; i < nconns; i++) {
    struct conn *c = &conns[i];
    c->h = test_create_connected (argv[1]);
    c->bufs = test_malloc (depth * BS);
    c->free_slots = test_malloc (depth * sizeof *c->free_slots);
    for (c->nr_free = 0; c->nr_free < depth; c->nr_free++) {
      c->free_slots[c->nr_free] = c->nr_free;
      refs[i * depth + c->nr_free] = (struct slot_ref) { c, c->nr_free };
    }
    c->x = 0x9e3779b97f4a7c15ULL + i;
  }
  blocks = (uint64_t) nbd_get_size (conns[0].h) / BS;
  if (blocks == 0) test_fail ("export smaller than one block");
  /* Let the server settle its per-connection set-up (threads) first. */
  usleep (200000);
  rss_idle = rss_kib (pid);

  t0c = cpu_ticks (pid);
  clock_gettime (CLOCK_MONOTONIC, &t0);
  while (done < count) {
    for (i = 0; i < nconns; i++) {
      struct conn *c = &conns[i];
      unsigned dir;

      while (issued < count && c->nr_free > 0) {
        uint64_t slot = c->free_slots[--c->nr_free], off;
        nbd_completion_callback cb = { .callback = completed,
                                       .user_data = &refs[i * depth + slot] };
        c->x ^= c->x << 13; c->x ^= c->x >> 7; c->x ^= c->x << 17;
        off = (c->x % blocks) * BS;
        if (nbd_aio_pread (c->h, c->bufs + slot * BS, BS, off, cb, 0) == -1)
          test_fail_nbd ("nbd_aio_pread");
        issued++;
      }
      pfds[i].fd = nbd_aio_get_fd (c->h);
      if (pfds[i].fd == -1) test_fail_nbd ("nbd_aio_get_fd");
      dir = nbd_aio_get_direction (c->h);
      pfds[i].events = 0;
      if (dir & LIBNBD_AIO_DIRECTION_READ) pfds[i].events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfds[i].events |= POLLOUT;
      pfds[i].revents = 0;
    }
    if (rss_busy == -1 && done >= count / 2)
      rss_busy = rss_kib (pid);
    if (poll (pfds, nconns, -1) == -1)
      test_fail ("poll: %s", strerror (errno));
    for (i = 0; i < nconns; i++) {
      struct nbd_handle *h = conns[i].h;
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
        CHECK_OK (nbd_aio_notify_read (h));
      else if (pfds[i].revents & POLLOUT)
        CHECK_OK (nbd_aio_notify_write (h));
    }
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  t1c = cpu_ticks (pid);
  secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf ("RESULT op=scale conns=%" PRIu64 " depth=%" PRIu64 " ops=%" PRIu64
          " secs=%.6f iops=%.0f srv_us_per_req=%.2f"
          " rss_base_kib=%ld rss_idle_kib=%ld rss_busy_kib=%ld\n",
          nconns, depth, count, secs, count / secs,
          (t0c < 0 || t1c < 0) ? -1.0
            : (t1c - t0c) * 1e6 / sysconf (_SC_CLK_TCK) / count,
          rss_base, rss_idle, rss_busy);
  for (i = 0; i < nconns; i++) {
    if (nbd_shutdown (conns[i].h, 0) == -1)
      test_fail_nbd ("nbd_shutdown");
    nbd_close (conns[i].h);
    free (conns[i].bufs);
    free (conns[i].free_slots);
  }
  free (conns);
  free (refs);
  free (pfds);
  return test_ok ();
}
