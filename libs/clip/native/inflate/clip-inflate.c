/*
 * Raw inflate for clip's gzip indexer (libs/clip/src/gzip/zlib-native.ts), on Debian's zlib.
 *
 * Node's zlib API cannot say where a deflate block boundary sits to the bit: after
 * inflate(Z_BLOCK) zlib leaves the number of unused bits of the last byte consumed in
 * strm.data_type (zlib.h), but Node does not pass it on, and without inflatePrime a resume at
 * such a boundary needs realignment blocks (realign.ts). This addon calls zlib directly:
 *
 *   new Inflater()                  one raw-deflate stream (windowBits -15)
 *   .step(flush, in, inOff, inLen, out, outOff, outLen, state)
 *                                   one inflate() call; state (Int32Array >= 3) gets avail_in,
 *                                   avail_out, data_type; returns zlib's message on corrupt
 *                                   data (the stream is ended then), else undefined
 *   .close()
 *   inflateAt(compressed, bits, dictionary, limit)
 *                                   at most `limit` bytes of output resumed at a block boundary:
 *                                   `compressed` starts at the byte before the boundary, whose
 *                                   high `bits` bits start the block (inflatePrime); null when
 *                                   the data is corrupt or reaches back before the dictionary
 *   pruneWindow(compressed, bits, window, following)
 *                                   [pruned window, bytes used, verified]: which window bytes the
 *                                   first 32 KiB after the boundary copy (three passes with
 *                                   marker dictionaries, see realign.ts pruneWindow), the others
 *                                   zeroed; verified when the resumed output equals `following`
 *
 * zlib is the one inside Node: node exports its bundled zlib's symbols for addons and node-gyp puts
 * its zlib.h on the include path (Node's "linking to libraries included with Node.js"); nothing is
 * linked here, so the header and the code that runs are always the same version.
 */
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define WINDOW 32768

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "clip-inflate: N-API call failed: " #call);                      \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

typedef struct {
  z_stream strm;
  int open;
} inflater_t;

static void inflater_end(inflater_t *inf) {
  if (inf->open) {
    inflateEnd(&inf->strm);
    inf->open = 0;
  }
}

static void inflater_finalize(napi_env env, void *data, void *hint) {
  inflater_t *inf = data;
  inflater_end(inf);
  free(inf);
}

static napi_value inflater_new(napi_env env, napi_callback_info info) {
  napi_value self;
  CHECK(napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  inflater_t *inf = calloc(1, sizeof *inf);
  if (inf == NULL) {
    napi_throw_error(env, NULL, "clip-inflate: out of memory");
    return NULL;
  }
  if (inflateInit2(&inf->strm, -15) != Z_OK) {
    free(inf);
    napi_throw_error(env, NULL, "clip-inflate: inflateInit2 failed");
    return NULL;
  }
  inf->open = 1;
  if (napi_wrap(env, self, inf, inflater_finalize, NULL, NULL) != napi_ok) {
    inflater_end(inf);
    free(inf);
    napi_throw_error(env, NULL, "clip-inflate: napi_wrap failed");
    return NULL;
  }
  return self;
}

static inflater_t *unwrap(napi_env env, napi_value self) {
  void *data = NULL;
  if (napi_unwrap(env, self, &data) != napi_ok) return NULL;
  return data;
}

/* A Buffer / typed array argument as bytes. */
static int bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) == napi_ok && is_buffer) {
    void *p = NULL;
    if (napi_get_buffer_info(env, v, &p, len) != napi_ok) return 0;
    *data = p;
    return 1;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, NULL, NULL) != napi_ok) return 0;
  size_t width = type == napi_int32_array || type == napi_uint32_array || type == napi_float32_array ? 4
                 : type == napi_float64_array || type == napi_bigint64_array || type == napi_biguint64_array ? 8
                 : type == napi_int16_array || type == napi_uint16_array ? 2
                                                                           : 1;
  *data = p;
  *len = length * width;
  return 1;
}

static int u32_of(napi_env env, napi_value v, uint32_t *out) { return napi_get_value_uint32(env, v, out) == napi_ok; }

static napi_value error_string(napi_env env, z_stream *strm, int ret) {
  const char *msg = strm->msg != NULL ? strm->msg : ret == Z_NEED_DICT ? "missing dictionary" : "zlib error";
  const char *code = ret == Z_DATA_ERROR ? "Z_DATA_ERROR" : ret == Z_NEED_DICT ? "Z_NEED_DICT" : ret == Z_MEM_ERROR ? "Z_MEM_ERROR" : "Z_STREAM_ERROR";
  char buf[256];
  snprintf(buf, sizeof buf, "%s (%s)", msg, code);
  napi_value s;
  CHECK(napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &s));
  return s;
}

static napi_value inflater_step(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8], self, undef;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  CHECK(napi_get_undefined(env, &undef));
  inflater_t *inf = unwrap(env, self);
  uint32_t flush, in_off, in_len, out_off, out_len;
  uint8_t *in = NULL, *out = NULL, *state_bytes = NULL;
  size_t in_size = 0, out_size = 0, state_size = 0;
  if (inf == NULL || argc < 8 || !u32_of(env, argv[0], &flush) || !bytes_of(env, argv[1], &in, &in_size) ||
      !u32_of(env, argv[2], &in_off) || !u32_of(env, argv[3], &in_len) || !bytes_of(env, argv[4], &out, &out_size) ||
      !u32_of(env, argv[5], &out_off) || !u32_of(env, argv[6], &out_len) ||
      !bytes_of(env, argv[7], &state_bytes, &state_size) || state_size < 3 * sizeof(int32_t) ||
      (size_t)in_off + in_len > in_size || (size_t)out_off + out_len > out_size) {
    napi_throw_type_error(env, NULL, "clip-inflate: step(flush, in, inOff, inLen, out, outOff, outLen, state) out of range");
    return NULL;
  }
  if (!inf->open) {
    napi_throw_error(env, NULL, "clip-inflate: inflate stream used after close");
    return NULL;
  }
  z_stream *strm = &inf->strm;
  strm->next_in = in + in_off;
  strm->avail_in = in_len;
  strm->next_out = out + out_off;
  strm->avail_out = out_len;
  int ret = inflate(strm, (int)flush);
  int32_t *state = (int32_t *)state_bytes;
  state[0] = (int32_t)strm->avail_in;
  state[1] = (int32_t)strm->avail_out;
  state[2] = strm->data_type;
  if (ret == Z_OK || ret == Z_STREAM_END || ret == Z_BUF_ERROR) return undef;
  napi_value err = error_string(env, strm, ret);
  inflater_end(inf);
  return err;
}

static napi_value inflater_close(napi_env env, napi_callback_info info) {
  napi_value self, undef;
  CHECK(napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  CHECK(napi_get_undefined(env, &undef));
  inflater_t *inf = unwrap(env, self);
  if (inf != NULL) inflater_end(inf);
  return undef;
}

/*
 * Per environment (main thread, each worker): one raw inflate stream for resumes, reset for each
 * (zlib keeps its state and window allocated), and pruneWindow's buffers. The markers are filled
 * once: those of a window shorter than 32 KiB are the first bytes of the full ones.
 */
typedef struct {
  z_stream resume;
  uint8_t a[WINDOW], c[WINDOW], b[WINDOW];
  uint8_t out_a[WINDOW], out_c[WINDOW], out_b[WINDOW], used[WINDOW];
} scratch_t;

static void scratch_finalize(napi_env env, void *data, void *hint) {
  scratch_t *scratch = data;
  inflateEnd(&scratch->resume);
  free(scratch);
}

static scratch_t *scratch_of(napi_env env) {
  scratch_t *scratch = NULL;
  if (napi_get_instance_data(env, (void **)&scratch) != napi_ok || scratch == NULL) {
    napi_throw_error(env, NULL, "clip-inflate: not initialised");
    return NULL;
  }
  return scratch;
}

/*
 * Inflate from a block boundary into out[0..limit): returns the bytes produced, or -1 when the
 * data is corrupt (a back-reference before the dictionary included).
 */
static long inflate_at(scratch_t *scratch, const uint8_t *compressed, size_t len, unsigned bits, const uint8_t *dict,
                       size_t dict_len, uint8_t *out, size_t limit) {
  if (len == 0) return 0;
  z_stream *strm = &scratch->resume;
  if (inflateReset(strm) != Z_OK) return -1;
  if (dict_len > 0 && inflateSetDictionary(strm, dict, (uInt)dict_len) != Z_OK) return -1;
  if (bits > 0 && inflatePrime(strm, (int)bits, compressed[0] >> (8 - bits)) != Z_OK) return -1;
  strm->next_in = (Bytef *)compressed + 1;
  strm->avail_in = (uInt)(len - 1);
  strm->next_out = out;
  strm->avail_out = (uInt)limit;
  int ret = inflate(strm, Z_SYNC_FLUSH);
  return ret == Z_OK || ret == Z_STREAM_END || ret == Z_BUF_ERROR ? (long)(limit - strm->avail_out) : -1;
}

static napi_value js_inflate_at(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *compressed = NULL, *dict = NULL;
  size_t len = 0, dict_len = 0;
  uint32_t bits, limit;
  if (argc < 4 || !bytes_of(env, argv[0], &compressed, &len) || !u32_of(env, argv[1], &bits) || bits > 7 ||
      !bytes_of(env, argv[2], &dict, &dict_len) || !u32_of(env, argv[3], &limit)) {
    napi_throw_type_error(env, NULL, "clip-inflate: inflateAt(compressed, bits 0..7, dictionary, limit)");
    return NULL;
  }
  scratch_t *scratch = scratch_of(env);
  if (scratch == NULL) return NULL;
  uint8_t *out = limit <= WINDOW ? scratch->out_a : malloc(limit);
  if (out == NULL) {
    napi_throw_error(env, NULL, "clip-inflate: out of memory");
    return NULL;
  }
  long n = inflate_at(scratch, compressed, len, bits, dict, dict_len, out, limit);
  napi_status st = n < 0 ? napi_get_null(env, &result) : napi_create_buffer_copy(env, (size_t)n, out, NULL, &result);
  if (out != scratch->out_a) free(out);
  CHECK(st);
  return result;
}


static napi_value js_prune_window(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *compressed = NULL, *window = NULL, *following = NULL;
  size_t len = 0, n = 0, following_len = 0;
  uint32_t bits;
  if (argc < 4 || !bytes_of(env, argv[0], &compressed, &len) || !u32_of(env, argv[1], &bits) || bits > 7 ||
      !bytes_of(env, argv[2], &window, &n) || n > WINDOW || !bytes_of(env, argv[3], &following, &following_len)) {
    napi_throw_type_error(env, NULL, "clip-inflate: pruneWindow(compressed, bits 0..7, window <= 32 KiB, following)");
    return NULL;
  }
  /* a, c, b: marker dictionaries (j & 0xff, its complement, j >> 8), then their outputs */
  scratch_t *scratch = scratch_of(env);
  if (scratch == NULL) return NULL;
  uint8_t *a = scratch->a, *c = scratch->c, *b = scratch->b, *out_a = scratch->out_a, *out_c = scratch->out_c, *out_b = scratch->out_b;
  uint8_t *used = scratch->used;
  long la = 0, lb = 0, lc = 0;
  if (n > 0) {
    la = inflate_at(scratch, compressed, len, bits, a, n, out_a, WINDOW);
    lb = inflate_at(scratch, compressed, len, bits, b, n, out_b, WINDOW);
    lc = inflate_at(scratch, compressed, len, bits, c, n, out_c, WINDOW);
  }
  napi_value pruned, used_v, verified_v, result;
  void *pruned_data = NULL;
  napi_status st = napi_create_buffer(env, n, &pruned_data, &pruned);
  CHECK(st);
  memset(pruned_data, 0, n);
  memset(used, 0, n);
  uint32_t used_count = 0;
  int verified;
  if (n == 0) {
    verified = 0; /* following is given: there is nothing to resume with */
  } else if (la < 0 || lb < 0 || lc < 0) {
    verified = 0;
  } else {
    long limit = la < lb ? la : lb;
    if (lc < limit) limit = lc;
    if (limit > WINDOW) limit = WINDOW;
    size_t want = following_len < WINDOW ? following_len : WINDOW;
    verified = (size_t)limit >= want;
    for (long k = 0; k < limit; k++) {
      uint8_t va = out_a[k];
      uint8_t real = va;
      if (va != out_c[k]) {
        size_t j = (size_t)va | ((size_t)out_b[k] << 8);
        if (j >= n) {
          verified = 0;
          continue;
        }
        real = window[j];
        if (!used[j]) {
          used[j] = 1;
          used_count++;
        }
      }
      if (verified && (size_t)k < following_len && following[k] != real) verified = 0;
    }
    for (size_t j = 0; j < n; j++)
      if (used[j]) ((uint8_t *)pruned_data)[j] = window[j];
  }
  CHECK(napi_create_uint32(env, used_count, &used_v));
  CHECK(napi_get_boolean(env, verified, &verified_v));
  CHECK(napi_create_array_with_length(env, 3, &result));
  CHECK(napi_set_element(env, result, 0, pruned));
  CHECK(napi_set_element(env, result, 1, used_v));
  CHECK(napi_set_element(env, result, 2, verified_v));
  return result;
}

static napi_value js_zlib_version(napi_env env, napi_callback_info info) {
  napi_value s;
  CHECK(napi_create_string_utf8(env, zlibVersion(), NAPI_AUTO_LENGTH, &s));
  return s;
}

NAPI_MODULE_INIT() {
  scratch_t *scratch = calloc(1, sizeof *scratch);
  if (scratch == NULL || inflateInit2(&scratch->resume, -15) != Z_OK) {
    free(scratch);
    napi_throw_error(env, NULL, "clip-inflate: out of memory");
    return NULL;
  }
  for (size_t j = 0; j < WINDOW; j++) {
    scratch->a[j] = (uint8_t)(j & 0xff);
    scratch->c[j] = (uint8_t)(~j & 0xff);
    scratch->b[j] = (uint8_t)(j >> 8);
  }
  if (napi_set_instance_data(env, scratch, scratch_finalize, NULL) != napi_ok) {
    inflateEnd(&scratch->resume);
    free(scratch);
    napi_throw_error(env, NULL, "clip-inflate: napi_set_instance_data failed");
    return NULL;
  }
  napi_property_descriptor methods[] = {
      {"step", NULL, inflater_step, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, inflater_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls, fn;
  CHECK(napi_define_class(env, "Inflater", NAPI_AUTO_LENGTH, inflater_new, NULL, 2, methods, &cls));
  CHECK(napi_set_named_property(env, exports, "Inflater", cls));
  CHECK(napi_create_function(env, "inflateAt", NAPI_AUTO_LENGTH, js_inflate_at, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "inflateAt", fn));
  CHECK(napi_create_function(env, "pruneWindow", NAPI_AUTO_LENGTH, js_prune_window, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "pruneWindow", fn));
  CHECK(napi_create_function(env, "zlibVersion", NAPI_AUTO_LENGTH, js_zlib_version, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "zlibVersion", fn));
  return exports;
}
