/* nbdkit-filter.h: write an nbdkit filter in C (nbdkit-filter(3)).
 *
 * A filter sits between the server and the plugin (or the next filter):
 * each of its callbacks receives the next layer and may call it, change
 * the request, or answer itself. A filter is a shared object exporting
 * filter_init, which returns its struct nbdkit_filter.
 *
 * The filter interface has no binary guarantee across nbdkit releases:
 * NBDKIT_REGISTER_FILTER records NBDKIT_VERSION_STRING in the filter, and
 * the server refuses a filter built for another version. This header has
 * nbdkit 1.32.5's layouts (struct nbdkit_filter, struct nbdkit_next_ops,
 * struct nbdkit_extent, struct nbdkit_export), written for the Rust NBD
 * stack from nbdkit's documented interface. */
#ifndef NBDKIT_FILTER_H
#define NBDKIT_FILTER_H

#include <stdlib.h>

#include <nbdkit-common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The filter API version (6 since nbdkit 1.16). */
#define NBDKIT_FILTER_API_VERSION 6

/* What .can_zero answers (a filter may say it emulates zeroing). */
#define NBDKIT_ZERO_NONE     0
#define NBDKIT_ZERO_EMULATE  1
#define NBDKIT_ZERO_NATIVE   2

/* Opaque to filters: the layer below as a whole (backend), one
 * connection's place in the chain (context), and the next layer's open
 * connection with its operations (next). */
typedef struct nbdkit_backend nbdkit_backend;
typedef struct nbdkit_context nbdkit_context;
typedef struct nbdkit_next_ops nbdkit_next;

/* The next layer's callbacks a filter passes on to, before a connection
 * exists. */
typedef int nbdkit_next_config (nbdkit_backend *backend,
                                const char *key, const char *value);
typedef int nbdkit_next_config_complete (nbdkit_backend *backend);
typedef int nbdkit_next_preconnect (nbdkit_backend *backend, int readonly);
typedef int nbdkit_next_list_exports (nbdkit_backend *backend, int readonly,
                                      struct nbdkit_exports *exports);
typedef const char *nbdkit_next_default_export (nbdkit_backend *backend,
                                                int readonly);
typedef int nbdkit_next_open (nbdkit_context *context,
                              int readonly, const char *exportname);

/* The next layer's open connection: a filter calls next->pread (next,
 * ...) and so on. The data operations report failure by returning -1
 * with the errno in *err. The server's objects are larger than this
 * struct: use the pointers it gives, never a copy. */
struct nbdkit_next_ops {
  /* Only for a connection opened with nbdkit_next_context_open. */
  int (*prepare) (nbdkit_next *next);
  int (*finalize) (nbdkit_next *next);

  /* What the next layer can do. */
  int64_t (*get_size) (nbdkit_next *next);
  const char *(*export_description) (nbdkit_next *next);
  int (*block_size) (nbdkit_next *next, uint32_t *minimum,
                     uint32_t *preferred, uint32_t *maximum);
  int (*can_write) (nbdkit_next *next);
  int (*can_flush) (nbdkit_next *next);
  int (*is_rotational) (nbdkit_next *next);
  int (*can_trim) (nbdkit_next *next);
  int (*can_zero) (nbdkit_next *next);
  int (*can_fast_zero) (nbdkit_next *next);
  int (*can_extents) (nbdkit_next *next);
  int (*can_fua) (nbdkit_next *next);
  int (*can_multi_conn) (nbdkit_next *next);
  int (*can_cache) (nbdkit_next *next);

  /* Requests to it. */
  int (*pread) (nbdkit_next *next, void *buf, uint32_t count,
                uint64_t offset, uint32_t flags, int *err);
  int (*pwrite) (nbdkit_next *next, const void *buf, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err);
  int (*flush) (nbdkit_next *next, uint32_t flags, int *err);
  int (*trim) (nbdkit_next *next, uint32_t count, uint64_t offset,
               uint32_t flags, int *err);
  int (*zero) (nbdkit_next *next, uint32_t count, uint64_t offset,
               uint32_t flags, int *err);
  int (*extents) (nbdkit_next *next, uint32_t count, uint64_t offset,
                  uint32_t flags, struct nbdkit_extents *extents, int *err);
  int (*cache) (nbdkit_next *next, uint32_t count, uint64_t offset,
                uint32_t flags, int *err);
};

/* --- Extent lists: a filter may build its own, and read them back. */
struct nbdkit_extent {
  uint64_t offset;
  uint64_t length;
  uint32_t type;                /* NBDKIT_EXTENT_* bits */
};
NBDKIT_EXTERN_DECL (struct nbdkit_extents *, nbdkit_extents_new,
                    (uint64_t start, uint64_t end));
NBDKIT_EXTERN_DECL (void, nbdkit_extents_free,
                    (struct nbdkit_extents *extents));
NBDKIT_EXTERN_DECL (size_t, nbdkit_extents_count,
                    (const struct nbdkit_extents *extents));
NBDKIT_EXTERN_DECL (struct nbdkit_extent, nbdkit_get_extent,
                    (const struct nbdkit_extents *extents, size_t i));
/* The extents of the whole range, asking the next layer as often as it
 * takes. */
NBDKIT_EXTERN_DECL (struct nbdkit_extents *, nbdkit_extents_full,
                    (nbdkit_next *next, uint32_t count, uint64_t offset,
                     uint32_t flags, int *err));
/* The extents of the range, merged to multiples of align. */
NBDKIT_EXTERN_DECL (int, nbdkit_extents_aligned,
                    (nbdkit_next *next, uint32_t count, uint64_t offset,
                     uint32_t flags, uint32_t align,
                     struct nbdkit_extents *extents, int *err));

/* --- Export lists. */
struct nbdkit_export {
  char *name;
  char *description;
};
NBDKIT_EXTERN_DECL (struct nbdkit_exports *, nbdkit_exports_new, (void));
NBDKIT_EXTERN_DECL (void, nbdkit_exports_free,
                    (struct nbdkit_exports *exports));
NBDKIT_EXTERN_DECL (size_t, nbdkit_exports_count,
                    (const struct nbdkit_exports *exports));
NBDKIT_EXTERN_DECL (struct nbdkit_export, nbdkit_get_export,
                    (const struct nbdkit_exports *exports, size_t i));

/* --- Opening the next layer by hand (for filters that need more than
 * one connection below them, or one shared by all clients). */
NBDKIT_EXTERN_DECL (nbdkit_backend *, nbdkit_context_get_backend,
                    (nbdkit_context *context));
NBDKIT_EXTERN_DECL (nbdkit_next *, nbdkit_next_context_open,
                    (nbdkit_backend *backend, int readonly,
                     const char *exportname, int shared));
NBDKIT_EXTERN_DECL (void, nbdkit_next_context_close, (nbdkit_next *next));
NBDKIT_EXTERN_DECL (nbdkit_next *, nbdkit_context_set_next,
                    (nbdkit_context *context, nbdkit_next *next));

/* The filter. Each callback may be NULL: the request then goes to the
 * next layer unchanged. */
struct nbdkit_filter {
  /* Filled in by NBDKIT_REGISTER_FILTER. */
  int _api_version;
  const char *_version;

  /* Identity. name is what users type: --filter=NAME. */
  const char *name;
  const char *longname;
  const char *description;

  /* Life of the filter, before any connection. */
  void (*load) (void);
  void (*unload) (void);
  int (*config) (nbdkit_next_config *next, nbdkit_backend *backend,
                 const char *key, const char *value);
  int (*config_complete) (nbdkit_next_config_complete *next,
                          nbdkit_backend *backend);
  const char *config_help;
  int (*thread_model) (void);
  int (*get_ready) (int thread_model);
  int (*after_fork) (nbdkit_backend *backend);
  void (*cleanup) (nbdkit_backend *backend);
  int (*preconnect) (nbdkit_next_preconnect *next, nbdkit_backend *backend,
                     int readonly);
  int (*list_exports) (nbdkit_next_list_exports *next,
                       nbdkit_backend *backend, int readonly, int is_tls,
                       struct nbdkit_exports *exports);
  const char *(*default_export) (nbdkit_next_default_export *next,
                                 nbdkit_backend *backend,
                                 int readonly, int is_tls);

  /* Per connection. open returns the filter's handle for the rest. */
  void *(*open) (nbdkit_next_open *next, nbdkit_context *context,
                 int readonly, const char *exportname, int is_tls);
  void (*close) (void *handle);
  int (*prepare) (nbdkit_next *next, void *handle, int readonly);
  int (*finalize) (nbdkit_next *next, void *handle);

  /* What the export can do, as the filter presents it. */
  int64_t (*get_size) (nbdkit_next *next, void *handle);
  const char *(*export_description) (nbdkit_next *next, void *handle);
  int (*block_size) (nbdkit_next *next, void *handle, uint32_t *minimum,
                     uint32_t *preferred, uint32_t *maximum);
  int (*can_write) (nbdkit_next *next, void *handle);
  int (*can_flush) (nbdkit_next *next, void *handle);
  int (*is_rotational) (nbdkit_next *next, void *handle);
  int (*can_trim) (nbdkit_next *next, void *handle);
  int (*can_zero) (nbdkit_next *next, void *handle);
  int (*can_fast_zero) (nbdkit_next *next, void *handle);
  int (*can_extents) (nbdkit_next *next, void *handle);
  int (*can_fua) (nbdkit_next *next, void *handle);
  int (*can_multi_conn) (nbdkit_next *next, void *handle);
  int (*can_cache) (nbdkit_next *next, void *handle);

  /* Requests. */
  int (*pread) (nbdkit_next *next, void *handle, void *buf, uint32_t count,
                uint64_t offset, uint32_t flags, int *err);
  int (*pwrite) (nbdkit_next *next, void *handle, const void *buf,
                 uint32_t count, uint64_t offset, uint32_t flags, int *err);
  int (*flush) (nbdkit_next *next, void *handle, uint32_t flags, int *err);
  int (*trim) (nbdkit_next *next, void *handle, uint32_t count,
               uint64_t offset, uint32_t flags, int *err);
  int (*zero) (nbdkit_next *next, void *handle, uint32_t count,
               uint64_t offset, uint32_t flags, int *err);
  int (*extents) (nbdkit_next *next, void *handle, uint32_t count,
                  uint64_t offset, uint32_t flags,
                  struct nbdkit_extents *extents, int *err);
  int (*cache) (nbdkit_next *next, void *handle, uint32_t count,
                uint64_t offset, uint32_t flags, int *err);
};

/* Defines filter_init for the filter's struct, recording the API version
 * and the nbdkit version the filter is built for. */
#define NBDKIT_REGISTER_FILTER(filter)                  \
  NBDKIT_CXX_LANG_C                                     \
  NBDKIT_DLL_PUBLIC                                     \
  struct nbdkit_filter *                                \
  filter_init (void)                                    \
  {                                                     \
    (filter)._api_version = NBDKIT_FILTER_API_VERSION;  \
    (filter)._version = NBDKIT_VERSION_STRING;          \
    return &(filter);                                   \
  }

#ifdef __cplusplus
}
#endif

#endif /* NBDKIT_FILTER_H */
