/* socketpair: the raw limit a Unix-socket NBD transfer is measured
 * against. A child process writes BYTES through a socketpair in CHUNK-byte
 * writes; the parent reads them into a buffer of the same size and throws
 * them away, as nbdcopy's null: does.
 *
 *   socketpair BYTES CHUNK
 *
 * Prints
 *   RESULT op=socketpair bytes=... chunk=... secs=... GBps=...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
main (int argc, char *argv[])
{
  uint64_t bytes, chunk, got = 0;
  int sv[2], status;
  char *buf;
  pid_t pid;
  struct timespec t0, t1;
  double secs;

  if (argc != 3) {
    fprintf (stderr, "usage: socketpair BYTES CHUNK\n");
    exit (EXIT_FAILURE);
  }
  bytes = strtoull (argv[1], NULL, 0);
  chunk = strtoull (argv[2], NULL, 0);
  if (bytes == 0 || chunk == 0) {
    fprintf (stderr, "socketpair: bad BYTES / CHUNK\n");
    exit (EXIT_FAILURE);
  }
  buf = malloc (chunk);
  if (buf == NULL || socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == -1) {
    perror ("socketpair");
    exit (EXIT_FAILURE);
  }
  memset (buf, 0x5a, chunk);

  clock_gettime (CLOCK_MONOTONIC, &t0);
  pid = fork ();
  if (pid == -1) {
    perror ("fork");
    exit (EXIT_FAILURE);
  }
  if (pid == 0) {
    uint64_t sent = 0;
    close (sv[0]);
    while (sent < bytes) {
      size_t n = bytes - sent < chunk ? bytes - sent : chunk;
      ssize_t r = write (sv[1], buf, n);
      if (r == -1 && errno == EINTR) continue;
      if (r <= 0) _exit (EXIT_FAILURE);
      sent += r;
    }
    _exit (EXIT_SUCCESS);
  }
  close (sv[1]);
  for (;;) {
    ssize_t r = read (sv[0], buf, chunk);
    if (r == -1 && errno == EINTR) continue;
    if (r == -1) {
      perror ("read");
      exit (EXIT_FAILURE);
    }
    if (r == 0) break;
    got += r;
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  if (waitpid (pid, &status, 0) == -1 || !WIFEXITED (status) ||
      WEXITSTATUS (status) != 0 || got != bytes) {
    fprintf (stderr, "socketpair: writer failed or short (%" PRIu64 " bytes)\n",
             got);
    exit (EXIT_FAILURE);
  }
  secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf ("RESULT op=socketpair bytes=%" PRIu64 " chunk=%" PRIu64
          " secs=%.6f GBps=%.2f\n", bytes, chunk, secs, bytes / secs / 1e9);
  return 0;
}
