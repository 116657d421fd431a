/* nbd_connect_uri and nbd_get_uri: an nbd+unix URI to the harness's
 * server (export name from the path, percent-decoded), an nbd:// URI to a
 * TCP server this test starts (nbdkit -s on a socket it accepted itself,
 * inetd style), malformed URIs, and nbd_get_uri in each state.
 * nbdkit-args: memory 1M
 *
 * argv[1] is the harness's Unix socket, argv[2] the nbdkit binary. */
#define _GNU_SOURCE
#include "testlib.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Expect a call returning a string to have failed: NULL, errno, message. */
#define CHECK_NULL_ERR(expr, want_errno, call)                          \
  do {                                                                  \
    char *s_ = (expr);                                                  \
    if (s_ != NULL)                                                     \
      test_fail ("%s returned \"%s\", expected NULL [%s:%d]", #expr,    \
                 s_, __FILE__, __LINE__);                               \
    CHECK_ERR (-1, want_errno, call);                                   \
  } while (0)

/* Listens on 127.0.0.1 (a port the kernel picks) and forks a child that
 * accepts one connection and runs `nbdkit -s memory 1M` on it. */
static pid_t
start_tcp_server (const char *nbdkit, int *port)
{
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  int l = socket (AF_INET, SOCK_STREAM, 0);
  pid_t pid;

  if (l == -1) test_fail ("socket: %s", strerror (errno));
  memset (&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (bind (l, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      listen (l, 1) == -1 ||
      getsockname (l, (struct sockaddr *) &sin, &len) == -1)
    test_fail ("bind/listen: %s", strerror (errno));
  *port = ntohs (sin.sin_port);
  fflush (stdout);
  pid = fork ();
  if (pid == -1) test_fail ("fork: %s", strerror (errno));
  if (pid == 0) {
    int c = accept (l, NULL, NULL);
    if (c == -1 || dup2 (c, 0) == -1 || dup2 (c, 1) == -1) _exit (126);
    close (c);
    close (l);
    execl (nbdkit, nbdkit, "-s", "memory", "1M", (char *) NULL);
    _exit (127);
  }
  close (l);
  return pid;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char uri[4096], want[4096], *s, *name;
  char buf[512];
  int port, status;
  pid_t pid;

  test_begin ("connect-uri", argc, argv, 2);
  CHECK (strncmp (argv[1], "tcp:", 4) != 0);

  /* nbd+unix: the export name is the path without its "/", decoded. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_supports_uri (h) == 1);
  CHECK_NULL_ERR (nbd_get_uri (h), ENOTCONN, "nbd_get_uri");
  snprintf (uri, sizeof uri, "nbd+unix:///foo%%20bar?socket=%s&zzz=1", argv[1]);
  CHECK_OK (nbd_connect_uri (h, uri));
  name = nbd_get_export_name (h);
  CHECK (name != NULL && strcmp (name, "foo bar") == 0);
  free (name);
  CHECK (nbd_get_size (h) == 1024 * 1024);
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 0, 0));
  s = nbd_get_uri (h);
  if (s == NULL) test_fail_nbd ("nbd_get_uri");
  snprintf (want, sizeof want, "nbd+unix:///foo%%20bar?socket=%s", argv[1]);
  printf ("connect-uri: get_uri: %s\n", s);
  if (strcmp (s, want) != 0)
    test_fail ("nbd_get_uri: got %s, want %s", s, want);
  free (s);
  /* Only a newly created handle may connect. */
  CHECK_ERR (nbd_connect_uri (h, uri), EINVAL, "nbd_connect_uri");
  CHECK_OK (nbd_shutdown (h, 0));
  s = nbd_get_uri (h);           /* still allowed once shut down */
  CHECK (s != NULL);
  free (s);
  nbd_close (h);

  /* The user part of the URI is the TLS user name. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  snprintf (uri, sizeof uri, "nbd+unix://alice@/?socket=%s", argv[1]);
  CHECK_OK (nbd_connect_uri (h, uri));
  name = nbd_get_tls_username (h);
  CHECK (name != NULL && strcmp (name, "alice") == 0);
  free (name);
  s = nbd_get_uri (h);
  if (s == NULL) test_fail_nbd ("nbd_get_uri");
  snprintf (want, sizeof want, "nbd+unix://alice@/?socket=%s", argv[1]);
  if (strcmp (s, want) != 0)
    test_fail ("nbd_get_uri: got %s, want %s", s, want);
  free (s);
  nbd_close (h);

  /* nbd:// over TCP. */
  pid = start_tcp_server (argv[2], &port);
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%d/disk", port);
  CHECK_OK (nbd_connect_uri (h, uri));
  CHECK (nbd_get_size (h) == 1024 * 1024);
  memset (buf, 0x5a, sizeof buf);
  CHECK_OK (nbd_pwrite (h, buf, sizeof buf, 4096, 0));
  memset (buf, 0, sizeof buf);
  CHECK_OK (nbd_pread (h, buf, sizeof buf, 4096, 0));
  CHECK (buf[0] == 0x5a && buf[511] == 0x5a);
  s = nbd_get_uri (h);
  if (s == NULL) test_fail_nbd ("nbd_get_uri");
  printf ("connect-uri: get_uri: %s\n", s);
  if (strcmp (s, uri) != 0)
    test_fail ("nbd_get_uri: got %s, want %s", s, uri);
  free (s);
  name = nbd_get_export_name (h);
  CHECK (name != NULL && strcmp (name, "disk") == 0);
  free (name);
  CHECK_OK (nbd_shutdown (h, 0));
  nbd_close (h);
  if (waitpid (pid, &status, 0) != pid) test_fail ("waitpid");

  /* Malformed URIs: EINVAL, and the handle stays newly created. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK_ERR (nbd_connect_uri (h, "foo://x"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd:"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd:/x"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd://a b/"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd://h:abc/"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd+unix:///x"), EINVAL, "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd://h/?socket=/x"), EINVAL,
             "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd+vsock://abc/"), EINVAL,
             "nbd_connect_uri");
  CHECK_NULL_ERR (nbd_get_uri (h), ENOTCONN, "nbd_get_uri");
  /* ... so it can still connect. */
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", argv[1]);
  CHECK_OK (nbd_connect_uri (h, uri));
  nbd_close (h);

  /* A socket nobody listens on: the handle is dead, and get_uri still
   * names where it tried to connect. */
  h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  CHECK (nbd_connect_uri (h, "nbd+unix:///e?socket=/nonexistent/sock") == -1);
  CHECK (nbd_get_errno () == ENOENT);
  s = nbd_get_uri (h);
  if (s == NULL) test_fail_nbd ("nbd_get_uri (dead)");
  CHECK (strcmp (s, "nbd+unix:///e?socket=/nonexistent/sock") == 0);
  free (s);
  nbd_close (h);

  /* Connections get_uri cannot name. */
  {
    char *cmd[] = { argv[2], (char *) "-s", (char *) "memory", (char *) "1M",
                    NULL };
    h = nbd_create ();
    if (h == NULL) test_fail_nbd ("nbd_create");
    CHECK_OK (nbd_connect_command (h, cmd));
    CHECK_NULL_ERR (nbd_get_uri (h), EINVAL, "nbd_get_uri");
    nbd_close (h);
  }

  return test_ok ();
}
