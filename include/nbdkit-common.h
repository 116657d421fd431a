/* nbdkit-common.h: what plugins and filters share: thread models, request
 * flags, and the functions the server offers them (errors and debug
 * messages, parsing of parameters, the peer, interned strings, extents and
 * export lists). See nbdkit-plugin(3).
 *
 * Written for the Rust NBD stack from nbdkit's documented interface. It is
 * binary compatible with nbdkit 1.32.5's header: same constants, same
 * function names and types, so a plugin built with either runs on either
 * server. Include nbdkit-plugin.h or nbdkit-filter.h, not this file.
 *
 * No library is linked: the server binary that loads the plugin provides
 * every nbdkit_* function. */
#ifndef NBDKIT_COMMON_H
#define NBDKIT_COMMON_H

#if !defined (NBDKIT_PLUGIN_H) && !defined (NBDKIT_FILTER_H)
#error "include <nbdkit-plugin.h> or <nbdkit-filter.h>, not this file"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <nbdkit-version.h>

#ifdef __cplusplus
extern "C" {
#endif

/* printf-style checking of the format argument, for the compilers that
 * know the attribute (%m is accepted by the server's formatter). */
#if defined (__GNUC__) || defined (__clang__)
#define ATTRIBUTE_FORMAT_PRINTF(fmtpos, argpos) \
  __attribute__ ((__format__ (__printf__, fmtpos, argpos)))
#else
#define ATTRIBUTE_FORMAT_PRINTF(fmtpos, argpos)
#endif

/* How much concurrency a plugin or filter accepts, least first. The
 * server runs with the least any layer of the chain asks for. */
#define NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS     0
#define NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS    1
#define NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS        2
#define NBDKIT_THREAD_MODEL_PARALLEL                  3

/* Bits of the flags argument of the data callbacks. */
#define NBDKIT_FLAG_MAY_TRIM  (1 << 0) /* zero: may leave a hole */
#define NBDKIT_FLAG_FUA       (1 << 1) /* write: persist before replying */
#define NBDKIT_FLAG_REQ_ONE   (1 << 2) /* extents: one is enough */
#define NBDKIT_FLAG_FAST_ZERO (1 << 3) /* zero: fail unless it is quick */

/* What .can_fua and .can_cache answer. */
#define NBDKIT_FUA_NONE       0
#define NBDKIT_FUA_EMULATE    1
#define NBDKIT_FUA_NATIVE     2
#define NBDKIT_CACHE_NONE     0
#define NBDKIT_CACHE_EMULATE  1
#define NBDKIT_CACHE_NATIVE   2

/* The type bits of an extent (as NBD's base:allocation context). */
#define NBDKIT_EXTENT_HOLE    (1 << 0)
#define NBDKIT_EXTENT_ZERO    (1 << 1)

/* Declares a function provided by the server; marks what a plugin must
 * export (plugin_init, filter_init). */
#define NBDKIT_EXTERN_DECL(ret, fn, args) extern ret fn args
#define NBDKIT_DLL_PUBLIC __attribute__ ((__visibility__ ("default")))

/* --- Messages. nbdkit_error reports the failure of the current callback
 * (the server sends the client an error); nbdkit_debug prints only with
 * -v. The v- forms take a va_list. */
NBDKIT_EXTERN_DECL (void, nbdkit_error,
                    (const char *fs, ...) ATTRIBUTE_FORMAT_PRINTF (1, 2));
NBDKIT_EXTERN_DECL (void, nbdkit_verror,
                    (const char *fs, va_list args)
                    ATTRIBUTE_FORMAT_PRINTF (1, 0));
NBDKIT_EXTERN_DECL (void, nbdkit_debug,
                    (const char *fs, ...) ATTRIBUTE_FORMAT_PRINTF (1, 2));
NBDKIT_EXTERN_DECL (void, nbdkit_vdebug,
                    (const char *fs, va_list args)
                    ATTRIBUTE_FORMAT_PRINTF (1, 0));

/* --- Parameters given as KEY=VALUE. Each returns -1 (after
 * nbdkit_error) when VALUE does not parse; "what" names the value in
 * that message. */
NBDKIT_EXTERN_DECL (char *, nbdkit_absolute_path, (const char *path));
NBDKIT_EXTERN_DECL (char *, nbdkit_realpath, (const char *path));
NBDKIT_EXTERN_DECL (int64_t, nbdkit_parse_size, (const char *str));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_bool, (const char *str));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_int,
                    (const char *what, const char *str, int *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_unsigned,
                    (const char *what, const char *str, unsigned *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_int8_t,
                    (const char *what, const char *str, int8_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_uint8_t,
                    (const char *what, const char *str, uint8_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_int16_t,
                    (const char *what, const char *str, int16_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_uint16_t,
                    (const char *what, const char *str, uint16_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_int32_t,
                    (const char *what, const char *str, int32_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_uint32_t,
                    (const char *what, const char *str, uint32_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_int64_t,
                    (const char *what, const char *str, int64_t *r));
NBDKIT_EXTERN_DECL (int, nbdkit_parse_uint64_t,
                    (const char *what, const char *str, uint64_t *r));
/* password=VALUE: the value itself, "-" (ask on the terminal), "-FD"
 * or "+FILE". The caller frees *password. */
NBDKIT_EXTERN_DECL (int, nbdkit_read_password,
                    (const char *value, char **password));
/* Whether the plugin may use standard input and output (not with -s). */
NBDKIT_EXTERN_DECL (int, nbdkit_stdio_safe, (void));

/* --- The server and the client. */
NBDKIT_EXTERN_DECL (int, nbdkit_nanosleep, (unsigned sec, unsigned nsec));
NBDKIT_EXTERN_DECL (int, nbdkit_peer_name,
                    (struct sockaddr *addr, socklen_t *addrlen));
NBDKIT_EXTERN_DECL (int64_t, nbdkit_peer_pid, (void));
NBDKIT_EXTERN_DECL (int64_t, nbdkit_peer_uid, (void));
NBDKIT_EXTERN_DECL (int64_t, nbdkit_peer_gid, (void));
NBDKIT_EXTERN_DECL (void, nbdkit_shutdown, (void));

/* --- Strings that live as long as the connection (or, outside one, the
 * server): never freed by the caller. */
NBDKIT_EXTERN_DECL (const char *, nbdkit_strdup_intern, (const char *str));
NBDKIT_EXTERN_DECL (const char *, nbdkit_strndup_intern,
                    (const char *str, size_t n));
NBDKIT_EXTERN_DECL (const char *, nbdkit_printf_intern,
                    (const char *fs, ...) ATTRIBUTE_FORMAT_PRINTF (1, 2));
NBDKIT_EXTERN_DECL (const char *, nbdkit_vprintf_intern,
                    (const char *fs, va_list args)
                    ATTRIBUTE_FORMAT_PRINTF (1, 0));

/* --- Lists the server owns and the callbacks fill: extents (.extents)
 * and exports (.list_exports). Opaque. */
struct nbdkit_extents;
NBDKIT_EXTERN_DECL (int, nbdkit_add_extent,
                    (struct nbdkit_extents *extents,
                     uint64_t offset, uint64_t length, uint32_t type));
struct nbdkit_exports;
NBDKIT_EXTERN_DECL (int, nbdkit_add_export,
                    (struct nbdkit_exports *exports,
                     const char *name, const char *description));
NBDKIT_EXTERN_DECL (int, nbdkit_use_default_export,
                    (struct nbdkit_exports *exports));

/* A non-NULL handle for .open to return when the plugin keeps no state
 * per connection. */
#define NBDKIT_HANDLE_NOT_NEEDED (&errno)

#ifdef __cplusplus
}
#endif

/* plugin_init and filter_init keep C linkage in C++ plugins. */
#ifdef __cplusplus
#define NBDKIT_CXX_LANG_C extern "C"
#else
#define NBDKIT_CXX_LANG_C
#endif

#endif /* NBDKIT_COMMON_H */
