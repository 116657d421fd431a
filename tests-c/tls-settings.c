/* TLS settings (stored and reported; TLS itself is tests/interop/tls.sh),
 * TLS required against a server without TLS (ENOTSUP, from both
 * libraries), and the nbd_set_uri_allow_* rules.
 * nbdkit-args: memory 1M
 *
 * argv[1] is the harness's Unix socket (a server without TLS). */
#define _GNU_SOURCE
#include "testlib.h"

static void
check_str (char *got, const char *want)
{
  if (got == NULL) test_fail_nbd ("getter");
  if (strcmp (got, want) != 0)
    test_fail ("got \"%s\", want \"%s\"", got, want);
  free (got);
}

static struct nbd_handle *
create (void)
{
  struct nbd_handle *h = nbd_create ();
  if (h == NULL) test_fail_nbd ("nbd_create");
  return h;
}

int
main (int argc, char *argv[])
{
  struct nbd_handle *h;
  char uri[4096];
  char *s;
  const char *sock;

  test_begin ("tls-settings", argc, argv, 1);
  sock = argv[1];
  CHECK (strncmp (sock, "tcp:", 4) != 0);

  /* Defaults and setters. */
  h = create ();
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_DISABLE);
  CHECK (nbd_get_tls_verify_peer (h) == 1);
  CHECK (nbd_supports_uri (h) == 1);
  /* Both are built with GnuTLS. */
  CHECK (nbd_supports_tls (h) == 1);
  CHECK_ERR (nbd_set_tls (h, 3), EINVAL, "nbd_set_tls");
  CHECK_ERR (nbd_set_tls (h, -1), EINVAL, "nbd_set_tls");
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_DISABLE);
  CHECK_OK (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_ALLOW);
  CHECK_OK (nbd_set_tls_verify_peer (h, false));
  CHECK (nbd_get_tls_verify_peer (h) == 0);
  CHECK_OK (nbd_set_tls_certificates (h, "/nonexistent/certs"));
  CHECK_OK (nbd_set_tls_psk_file (h, "/nonexistent/keys.psk"));
  /* The user name: $LOGNAME until one is set. */
  if (setenv ("LOGNAME", "tester", 1) == -1) test_fail ("setenv");
  check_str (nbd_get_tls_username (h), "tester");
  CHECK_OK (nbd_set_tls_username (h, "alice"));
  check_str (nbd_get_tls_username (h), "alice");
  CHECK_ERR (nbd_get_tls_negotiated (h), ENOTCONN, "nbd_get_tls_negotiated");
  /* TLS allowed: connects in plain text to a server without TLS. */
  CHECK_OK (nbd_connect_unix (h, sock));
  CHECK (nbd_get_tls_negotiated (h) == 0);
  CHECK (nbd_get_size (h) == 1024 * 1024);
  /* Settings are for newly created handles only; getters always work. */
  CHECK_ERR (nbd_set_tls (h, LIBNBD_TLS_DISABLE), EINVAL, "nbd_set_tls");
  CHECK_ERR (nbd_set_tls_username (h, "bob"), EINVAL, "nbd_set_tls_username");
  CHECK_ERR (nbd_set_tls_verify_peer (h, true), EINVAL,
             "nbd_set_tls_verify_peer");
  CHECK_ERR (nbd_set_tls_certificates (h, "/x"), EINVAL,
             "nbd_set_tls_certificates");
  CHECK_ERR (nbd_set_tls_psk_file (h, "/x"), EINVAL, "nbd_set_tls_psk_file");
  CHECK_ERR (nbd_set_uri_allow_tls (h, LIBNBD_TLS_ALLOW), EINVAL,
             "nbd_set_uri_allow_tls");
  CHECK_ERR (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_MASK),
             EINVAL, "nbd_set_uri_allow_transports");
  CHECK_ERR (nbd_set_uri_allow_local_file (h, true), EINVAL,
             "nbd_set_uri_allow_local_file");
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_ALLOW);
  check_str (nbd_get_tls_username (h), "alice");
  nbd_close (h);

  /* Without $LOGNAME: a name from getlogin_r, or NULL with an error. */
  unsetenv ("LOGNAME");
  h = create ();
  s = nbd_get_tls_username (h);
  if (s == NULL) {
    CHECK (nbd_get_errno () != 0);
    CHECK (strncmp (nbd_get_error (), "nbd_get_tls_username: ", 22) == 0);
  }
  free (s);
  nbd_close (h);

  /* TLS required, server without TLS: ENOTSUP when the server refuses
   * STARTTLS; the handle is dead. */
  h = create ();
  CHECK_OK (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  CHECK_ERR (nbd_connect_unix (h, sock), ENOTSUP, "nbd_connect_unix");
  CHECK_ERR (nbd_get_size (h), EINVAL, "nbd_get_size");
  nbd_close (h);

  /* nbds URIs: TLS becomes required, and the same refusal follows. */
  h = create ();
  snprintf (uri, sizeof uri, "nbds+unix://carol@/e?socket=%s", sock);
  CHECK_ERR (nbd_connect_uri (h, uri), ENOTSUP, "nbd_connect_uri");
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_REQUIRE);
  check_str (nbd_get_tls_username (h), "carol");
  check_str (nbd_get_export_name (h), "e");
  snprintf (uri, sizeof uri, "nbds+unix://carol@/e?socket=%s", sock);
  check_str (nbd_get_uri (h), uri);
  nbd_close (h);

  /* nbd_set_uri_allow_transports. */
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", sock);
  h = create ();
  CHECK_ERR (nbd_set_uri_allow_transports (h, 0x10), EINVAL,
             "nbd_set_uri_allow_transports");
  CHECK_OK (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_TCP |
                                          LIBNBD_ALLOW_TRANSPORT_VSOCK));
  CHECK_ERR (nbd_connect_uri (h, uri), EPERM, "nbd_connect_uri");
  /* The refusal left the handle newly created: it can still connect. */
  CHECK_OK (nbd_connect_unix (h, sock));
  nbd_close (h);
  h = create ();
  CHECK_OK (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX));
  CHECK_ERR (nbd_connect_uri (h, "nbd://localhost/"), EPERM,
             "nbd_connect_uri");
  CHECK_ERR (nbd_connect_uri (h, "nbd+vsock:///"), EPERM, "nbd_connect_uri");
  CHECK_OK (nbd_connect_uri (h, uri));
  nbd_close (h);

  /* nbd_set_uri_allow_tls: DISABLE forbids nbds, REQUIRE forbids nbd. */
  h = create ();
  CHECK_ERR (nbd_set_uri_allow_tls (h, 3), EINVAL, "nbd_set_uri_allow_tls");
  CHECK_OK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_REQUIRE));
  CHECK_ERR (nbd_connect_uri (h, uri), EPERM, "nbd_connect_uri");
  CHECK_OK (nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE));
  snprintf (uri, sizeof uri, "nbds+unix:///?socket=%s", sock);
  CHECK_ERR (nbd_connect_uri (h, uri), EPERM, "nbd_connect_uri");
  CHECK (nbd_get_tls (h) == LIBNBD_TLS_DISABLE);   /* not applied */
  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", sock);
  CHECK_OK (nbd_connect_uri (h, uri));
  nbd_close (h);

  /* Local files in URIs need nbd_set_uri_allow_local_file. */
  h = create ();
  snprintf (uri, sizeof uri,
            "nbd+unix:///?socket=%s&tls-psk-file=/nonexistent/k", sock);
  CHECK_ERR (nbd_connect_uri (h, uri), EPERM, "nbd_connect_uri");
  snprintf (uri, sizeof uri,
            "nbd+unix:///?socket=%s&tls-certificates=/nonexistent/c", sock);
  CHECK_ERR (nbd_connect_uri (h, uri), EPERM, "nbd_connect_uri");
  CHECK_OK (nbd_set_uri_allow_local_file (h, true));
  snprintf (uri, sizeof uri,
            "nbd+unix:///?socket=%s&tls-certificates=/c&tls-psk-file=/k", sock);
  /* Allowed now; TLS is not required by nbd+unix, so it connects. */
  CHECK_OK (nbd_connect_uri (h, uri));
  check_str (nbd_get_uri (h), uri);
  nbd_close (h);

  return test_ok ();
}
