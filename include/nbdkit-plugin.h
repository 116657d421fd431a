/* nbdkit-plugin.h: write an nbdkit plugin in C (nbdkit-plugin(3)).
 *
 * A plugin is a shared object exporting plugin_init, which returns its
 * struct nbdkit_plugin: a name and the callbacks the server calls to
 * configure the plugin, open a connection, and serve its requests.
 * Define THREAD_MODEL before NBDKIT_REGISTER_PLUGIN, and
 * NBDKIT_API_VERSION 2 before including this header for the callbacks
 * that take flags (version 1, the default, is the older form).
 *
 * Written for the Rust NBD stack from nbdkit's documented interface; the
 * struct has nbdkit 1.32.5's layout field for field, so plugins built with
 * this header or with nbdkit's load in either server. */
#ifndef NBDKIT_PLUGIN_H
#define NBDKIT_PLUGIN_H

#include <nbdkit-common.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NBDKIT_API_VERSION
#define NBDKIT_API_VERSION 1
#elif (NBDKIT_API_VERSION - 0) < 1 || NBDKIT_API_VERSION > 2
#error "NBDKIT_API_VERSION must be 1 or 2"
#endif

/* Fields are only ever appended, and _struct_size tells the server how
 * many a plugin knows of: a plugin built with an older header works with
 * a newer server. The slots whose meaning depends on NBDKIT_API_VERSION
 * keep their place in both; the form not in use is unnamed padding. */
struct nbdkit_plugin {
  /* Filled in by NBDKIT_REGISTER_PLUGIN. */
  uint64_t _struct_size;
  int _api_version;
  int _thread_model;

  /* Identity. name (required) is what users type: nbdkit NAME. */
  const char *name;
  const char *longname;
  const char *version;
  const char *description;

  /* Life of the plugin: loaded, configured with KEY=VALUE, ... */
  void (*load) (void);
  void (*unload) (void);
  int (*config) (const char *key, const char *value);
  int (*config_complete) (void);
  const char *config_help;

  /* ... then per connection: open returns the handle the rest receive. */
  void *(*open) (int readonly);
  void (*close) (void *handle);
  int64_t (*get_size) (void *handle);
  int (*can_write) (void *handle);
  int (*can_flush) (void *handle);
  int (*is_rotational) (void *handle);
  int (*can_trim) (void *handle);

  /* The data callbacks of API version 1 (no flags). */
#if NBDKIT_API_VERSION == 1
  int (*pread) (void *handle, void *buf, uint32_t count, uint64_t offset);
  int (*pwrite) (void *handle, const void *buf, uint32_t count,
                 uint64_t offset);
  int (*flush) (void *handle);
  int (*trim) (void *handle, uint32_t count, uint64_t offset);
  int (*zero) (void *handle, uint32_t count, uint64_t offset, int may_trim);
#else
  int (*_pread_v1) (void *, void *, uint32_t, uint64_t);
  int (*_pwrite_v1) (void *, const void *, uint32_t, uint64_t);
  int (*_flush_v1) (void *);
  int (*_trim_v1) (void *, uint32_t, uint64_t);
  int (*_zero_v1) (void *, uint32_t, uint64_t, int);
#endif

  /* Non-zero: after a failed callback that did not call
   * nbdkit_set_error, errno says why. */
  int errno_is_preserved;

  void (*dump_plugin) (void);
  int (*can_zero) (void *handle);
  int (*can_fua) (void *handle);

  /* The data callbacks of API version 2 (with NBDKIT_FLAG_* flags). */
#if NBDKIT_API_VERSION == 1
  int (*_unused1) (void *, void *, uint32_t, uint64_t, uint32_t);
  int (*_unused2) (void *, const void *, uint32_t, uint64_t, uint32_t);
  int (*_unused3) (void *, uint32_t);
  int (*_unused4) (void *, uint32_t, uint64_t, uint32_t);
  int (*_unused5) (void *, uint32_t, uint64_t, uint32_t);
#else
  int (*pread) (void *handle, void *buf, uint32_t count, uint64_t offset,
                uint32_t flags);
  int (*pwrite) (void *handle, const void *buf, uint32_t count,
                 uint64_t offset, uint32_t flags);
  int (*flush) (void *handle, uint32_t flags);
  int (*trim) (void *handle, uint32_t count, uint64_t offset,
               uint32_t flags);
  int (*zero) (void *handle, uint32_t count, uint64_t offset,
               uint32_t flags);
#endif

  /* The key a bare VALUE on the command line stands for. */
  const char *magic_config_key;

  int (*can_multi_conn) (void *handle);
  int (*can_extents) (void *handle);
  int (*extents) (void *handle, uint32_t count, uint64_t offset,
                  uint32_t flags, struct nbdkit_extents *extents);
  int (*can_cache) (void *handle);
  int (*cache) (void *handle, uint32_t count, uint64_t offset,
                uint32_t flags);
  int (*thread_model) (void);
  int (*can_fast_zero) (void *handle);
  int (*preconnect) (int readonly);
  int (*get_ready) (void);
  int (*after_fork) (void);
  int (*list_exports) (int readonly, int is_tls,
                       struct nbdkit_exports *exports);
  const char *(*default_export) (int readonly, int is_tls);
  const char *(*export_description) (void *handle);
  void (*cleanup) (void);
  int (*block_size) (void *handle, uint32_t *minimum, uint32_t *preferred,
                     uint32_t *maximum);
};

/* The errno the client gets for the failing callback. */
NBDKIT_EXTERN_DECL (void, nbdkit_set_error, (int err));
/* The export name the client asked for, in .open and after. */
NBDKIT_EXTERN_DECL (const char *, nbdkit_export_name, (void));
/* Whether the connection is running over TLS. */
NBDKIT_EXTERN_DECL (int, nbdkit_is_tls, (void));

/* Defines plugin_init for the plugin's struct, recording the header's
 * size, API version and the THREAD_MODEL the plugin defines. */
#define NBDKIT_REGISTER_PLUGIN(plugin)                  \
  NBDKIT_CXX_LANG_C                                     \
  NBDKIT_DLL_PUBLIC                                     \
  struct nbdkit_plugin *                                \
  plugin_init (void)                                    \
  {                                                     \
    (plugin)._struct_size = sizeof (plugin);            \
    (plugin)._api_version = NBDKIT_API_VERSION;         \
    (plugin)._thread_model = THREAD_MODEL;              \
    return &(plugin);                                   \
  }

#ifdef __cplusplus
}
#endif

#endif /* NBDKIT_PLUGIN_H */
