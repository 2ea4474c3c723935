/*
 * fuse-native 2.2.6's addon, compiled so that every path and name crosses between C and
 * JavaScript as bytes: a C string becomes a JS string with one character per byte
 * (napi_create_string_latin1), and a JS string goes back one byte per character
 * (napi_get_value_string_latin1). The stock addon uses the UTF-8 calls, which turn a name that
 * is not valid UTF-8 into U+FFFD on the way in and write the replacement's UTF-8 on the way out:
 * `caf\xe9.txt` and `caf\xe8.txt` both become `caf\xef\xbf\xbd.txt`.
 *
 * The N-API headers are included first, with their real declarations; the renames below then
 * apply only to fuse-native.c and the napi-macros it expands. Both pairs of functions have the
 * same signatures. Built from source by scripts/build-fuse-addon.sh (see binding.gyp).
 */
#include <node_api.h>

#define napi_create_string_utf8 napi_create_string_latin1
#define napi_get_value_string_utf8 napi_get_value_string_latin1

#include "fuse-native.c"
