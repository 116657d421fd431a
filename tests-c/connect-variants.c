/* nbd_connect_socket (a socket this test connected itself),
 * nbd_connect_systemd_socket_activation (the nbdkit under test run with
 * LISTEN_FDS=1), nbd_connect_vsock's errors, and nbd_kill_subprocess.
 * nbdkit-args: memory 1M
 *
 * argv[1] is the harness's Unix socket, argv[2] the nbdkit binary. A
 * server that does not support socket activation (its binary never
 * mentions LISTEN_FDS) makes that part, and so the test, a skip (exit 77)
 * after the other parts have passed. */
#define _GNU_SOURCE
#include "testlib.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK_NULL_ERR(expr, want_errno, call)                          \
  do {                                                                  \
    char *s_ = (expr);                                                  \
    if (s_ != NULL)                                                     \
      test_fail ("%s returned \"%s\", expected NULL [%s:%d]", #expr,    \
                 s_, __FILE__, __LINE__);                               \
    CHECK_ERR (-1, want_errno, call);                                   \
  } while (0)

/* Whether the file at path contains the bytes of needle. */
static bool
file_mentions (const char *path, const char *needle)
{
  FILE *fp = fopen (path, "rb");
  size_t n = strlen (needle), len = 0, cap = 0, r;
  char *buf = NULL;
  bool found;

  if (fp == NULL) return false;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 1 << 20;
      buf = realloc (buf, cap);
      if (buf == NULL) test_fail ("realloc");
    }
    r = fread (buf + len, 1, cap - len, fp);
    if (r == 0) break;
    len += r;
  }
  fclose (fp);
  found = memmem (buf, len, needle, n) != NULL;
  free (buf);
  return found;
}

static void
read_write (struct nbd_handle *h)
{
  char w[4096], r[4096];
  CHECK (nbd_get_size (h) == 1024 * 1024);
  test_fill_pattern (w, sizeof w, 8192, 3);
  CHECK_OK (nbd_pwrite (h, w, sizeof w, 8192, 0));
  CHECK_OK (nbd_pread (h, r, sizeof r, 8192, 0));
  CHECK (memcmp (w, r, sizeof w) == 0);
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  struct sockaddr_un sun;
  char *s, *path, *dir;
  int fd;
  struct stat st;

  test_begin ("connect-variants", argc, argv, 2);
  CHECK (strncmp (argv[1], "tcp:", 4) != 0);

  /* nbd_connect_socket: a socket we connected; libnbd owns it after. */
  fd = socket (AF_UNIX, SOCK_STREAM, 0);
  if (fd == -1) test_fail ("socket: %s", strerror (errno));
  memset (&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (strlen (argv[1]) >= sizeof sun.sun_path) test_fail ("path too long");
  strcpy (sun.sun_path, argv[1]);
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    test_fail ("connect %s: %s", argv[1], strerror (errno));
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_OK (nbd_connect_socket (h, fd));
  read_write (h);
  /* Not enough is known of the socket to name it as a URI. */
  CHECK_NULL_ERR (nbd_get_uri (h), EINVAL, "nbd_get_uri");
  CHECK_ERR (nbd_kill_subprocess (h, 0), ESRCH, "nbd_kill_subprocess");
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  /* The handle closed the socket. */
  CHECK (fcntl (fd, F_GETFD) == -1 && errno == EBADF);

  /* nbd_connect_vsock: only a newly created handle may connect; with no
   * vsock server at CID 1 port 1 the attempt fails, the handle is dead,
   * and nbd_get_uri names where it tried.  (tests/interop/vsock.sh
   * connects to a real vsock server when the kernel has loopback.) */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  if (nbd_connect_vsock (h, 1, 1) == 0)
    test_fail ("nbd_connect_vsock to CID 1 port 1 succeeded");
  printf ("connect-variants: connect_vsock(1, 1): %s\n", nbd_get_error ());
  s = nbd_get_uri (h);
  if (s == NULL) test_fail_nbd ("nbd_get_uri");
  CHECK (strcmp (s, "nbd+vsock://1:1/") == 0);
  free (s);
  CHECK_ERR (nbd_connect_vsock (h, 1, 1), EINVAL, "nbd_connect_vsock");
  nbd_close (h);

  /* nbd_kill_subprocess on nbd_connect_command's server. */
  {
    char *cmd[] = { argv[2], (char *) "-s", (char *) "memory", (char *) "1M",
                    NULL };
    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    CHECK_ERR (nbd_kill_subprocess (h, 0), ESRCH, "nbd_kill_subprocess");
    CHECK_OK (nbd_connect_command (h, cmd));
    read_write (h);
    CHECK_ERR (nbd_kill_subprocess (h, -1), EINVAL, "nbd_kill_subprocess");
    CHECK_OK (nbd_kill_subprocess (h, 0));   /* SIGTERM */
    /* The server is gone: commands now fail rather than hang. */
    {
      char b[512];
      int i, r = 0;
      for (i = 0; i < 100 && r == 0; ++i) {
        r = nbd_pread (h, b, sizeof b, 0, 0);
        if (r == 0) usleep (10000);
      }
      CHECK (r == -1);
    }
    nbd_close (h);
  }

  /* nbd_connect_systemd_socket_activation. */
  if (!file_mentions (argv[2], "LISTEN_FDS")) {
    printf ("SKIP: connect-variants: socket activation: %s does not support "
            "LISTEN_FDS (other parts passed)\n", argv[2]);
    fflush (stdout);
    exit (77);
  }
  {
    char *sa[] = { argv[2], (char *) "memory", (char *) "1M", NULL };
    char *bad[] = { (char *) "/nonexistent/nbdkit", NULL };

    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    CHECK_OK (nbd_connect_systemd_socket_activation (h, sa));
    read_write (h);
    s = nbd_get_uri (h);
    if (s == NULL) test_fail_nbd ("nbd_get_uri");
    printf ("connect-variants: socket activation: %s\n", s);
    path = strstr (s, "socket=");
    CHECK (strncmp (s, "nbd+unix:///?socket=/tmp/libnbd", 31) == 0);
    CHECK (path != NULL);
    path += strlen ("socket=");
    CHECK (stat (path, &st) == 0 && S_ISSOCK (st.st_mode));
    dir = strdup (path);
    if (dir == NULL) test_fail ("strdup");
    *strrchr (dir, '/') = '\0';
    CHECK (stat (dir, &st) == 0 && (st.st_mode & 0077) == 0);
    CHECK_ERR (nbd_connect_systemd_socket_activation (h, sa), EINVAL,
               "nbd_connect_systemd_socket_activation");
    /* Closing stops the server (it would serve on otherwise) and removes
     * its private directory; a hang here is a failure (the harness's
     * timeout). */
    nbd_close (h);
    CHECK (stat (path, &st) == -1 && errno == ENOENT);
    CHECK (stat (dir, &st) == -1 && errno == ENOENT);
    free (dir);
    free (s);

    /* kill_subprocess with socket activation, then close. */
    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    CHECK_OK (nbd_connect_systemd_socket_activation (h, sa));
    CHECK_OK (nbd_kill_subprocess (h, SIGTERM));
    nbd_close (h);

    /* A program that does not exist: an error, not a hang. */
    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    if (nbd_connect_systemd_socket_activation (h, bad) != -1)
      test_fail ("socket activation of a missing program succeeded");
    printf ("connect-variants: missing program: %s\n", nbd_get_error ());
    nbd_close (h);
  }

  return test_ok ();
}
