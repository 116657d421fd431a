/* Prints the binary layout of the plugin interface as the headers found
 * on the include path define it: the size and every field's offset of
 * each struct, and each constant. run.sh builds it with our headers and
 * with nbdkit's (Debian's nbdkit-plugin-dev) and the outputs must be
 * equal. Built twice more with NBDKIT_API_VERSION 1 and 2 for the plugin
 * struct, whose field names depend on it. */
#include <stddef.h>
#include <stdio.h>

#ifdef LAYOUT_FILTER
#include <nbdkit-filter.h>
#else
#include <nbdkit-plugin.h>
#endif

#define SIZE(s) printf ("sizeof %s = %zu\n", #s, sizeof (struct s))
#define FIELD(s, f) printf ("%s.%s @ %zu\n", #s, #f, offsetof (struct s, f))
#define CONST(c) printf ("%s = %lld\n", #c, (long long) (c))

int
main (void)
{
  CONST (NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS);
  CONST (NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS);
  CONST (NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS);
  CONST (NBDKIT_THREAD_MODEL_PARALLEL);
  CONST (NBDKIT_FLAG_MAY_TRIM);
  CONST (NBDKIT_FLAG_FUA);
  CONST (NBDKIT_FLAG_REQ_ONE);
  CONST (NBDKIT_FLAG_FAST_ZERO);
  CONST (NBDKIT_FUA_NONE);
  CONST (NBDKIT_FUA_EMULATE);
  CONST (NBDKIT_FUA_NATIVE);
  CONST (NBDKIT_CACHE_NONE);
  CONST (NBDKIT_CACHE_EMULATE);
  CONST (NBDKIT_CACHE_NATIVE);
  CONST (NBDKIT_EXTENT_HOLE);
  CONST (NBDKIT_EXTENT_ZERO);
  CONST (NBDKIT_VERSION_MAJOR);
  CONST (NBDKIT_VERSION_MINOR);
  CONST (NBDKIT_VERSION_MICRO);
  printf ("NBDKIT_VERSION_STRING = %s\n", NBDKIT_VERSION_STRING);

#ifdef LAYOUT_FILTER
  CONST (NBDKIT_FILTER_API_VERSION);
  CONST (NBDKIT_ZERO_NONE);
  CONST (NBDKIT_ZERO_EMULATE);
  CONST (NBDKIT_ZERO_NATIVE);
  SIZE (nbdkit_extent);
  FIELD (nbdkit_extent, offset);
  FIELD (nbdkit_extent, length);
  FIELD (nbdkit_extent, type);
  SIZE (nbdkit_export);
  FIELD (nbdkit_export, name);
  FIELD (nbdkit_export, description);
#define NEXT_OPS(X) X(prepare) X(finalize) X(get_size) X(export_description) \
  X(block_size) X(can_write) X(can_flush) X(is_rotational) X(can_trim) \
  X(can_zero) X(can_fast_zero) X(can_extents) X(can_fua) X(can_multi_conn) \
  X(can_cache) X(pread) X(pwrite) X(flush) X(trim) X(zero) X(extents) X(cache)
#define NEXT_FIELD(f) FIELD (nbdkit_next_ops, f);
  SIZE (nbdkit_next_ops);
  NEXT_OPS (NEXT_FIELD)
#define FILTER(X) X(_api_version) X(_version) X(name) X(longname) \
  X(description) X(load) X(unload) X(config) X(config_complete) \
  X(config_help) X(thread_model) X(get_ready) X(after_fork) X(cleanup) \
  X(preconnect) X(list_exports) X(default_export) X(open) X(close) \
  X(prepare) X(finalize) X(get_size) X(export_description) X(block_size) \
  X(can_write) X(can_flush) X(is_rotational) X(can_trim) X(can_zero) \
  X(can_fast_zero) X(can_extents) X(can_fua) X(can_multi_conn) \
  X(can_cache) X(pread) X(pwrite) X(flush) X(trim) X(zero) X(extents) \
  X(cache)
#define FILTER_FIELD(f) FIELD (nbdkit_filter, f);
  SIZE (nbdkit_filter);
  FILTER (FILTER_FIELD)
#else
  CONST (NBDKIT_API_VERSION);
#if NBDKIT_API_VERSION == 1
#define DATA_V1(X) X(pread) X(pwrite) X(flush) X(trim) X(zero)
#define DATA_V2(X) X(_unused1) X(_unused2) X(_unused3) X(_unused4) X(_unused5)
#else
#define DATA_V1(X) X(_pread_v1) X(_pwrite_v1) X(_flush_v1) X(_trim_v1) X(_zero_v1)
#define DATA_V2(X) X(pread) X(pwrite) X(flush) X(trim) X(zero)
#endif
#define PLUGIN(X) X(_struct_size) X(_api_version) X(_thread_model) X(name) \
  X(longname) X(version) X(description) X(load) X(unload) X(config) \
  X(config_complete) X(config_help) X(open) X(close) X(get_size) \
  X(can_write) X(can_flush) X(is_rotational) X(can_trim) DATA_V1(X) \
  X(errno_is_preserved) X(dump_plugin) X(can_zero) X(can_fua) DATA_V2(X) \
  X(magic_config_key) X(can_multi_conn) X(can_extents) X(extents) \
  X(can_cache) X(cache) X(thread_model) X(can_fast_zero) X(preconnect) \
  X(get_ready) X(after_fork) X(list_exports) X(default_export) \
  X(export_description) X(cleanup) X(block_size)
#define PLUGIN_FIELD(f) FIELD (nbdkit_plugin, f);
  SIZE (nbdkit_plugin);
  PLUGIN (PLUGIN_FIELD)
#endif
  return 0;
}
