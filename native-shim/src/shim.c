/*
 * vhost-user-client native shim.
 *
 * Everything else in the library reaches libc through koffi. This file holds the
 * two things koffi cannot express well:
 *
 *  1. Readiness of an arbitrary fd on Node's own event loop. A uv_poll_t watches
 *     the fd (epoll underneath) and calls back on the main thread; no libuv
 *     threadpool thread is held while a connection or an eventfd sits idle, which
 *     koffi's async calls would need.
 *
 *  2. Detachable ArrayBuffers over mmap'd memory. koffi.view() buffers cannot be
 *     detached, so a view that outlives munmap() would fault the process. Buffers
 *     made here are detached before the mapping goes away: stale typed arrays then
 *     read as length 0 instead of touching unmapped pages.
 */
#include <node_api.h>
#include <uv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(env, call)                                                       \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error((env), "VHOST_NATIVE", #call " failed");               \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  int closing;
} watcher_t;

static void watcher_free(uv_handle_t *handle) {
  watcher_t *w = (watcher_t *)handle->data;
  free(w);
}

static void watcher_event(uv_poll_t *poll, int status, int events) {
  watcher_t *w = (watcher_t *)poll->data;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2];
  if (napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != NULL) {
    /* napi_make_callback wants an object receiver; undefined fails with napi_object_expected. */
    napi_get_global(env, &recv);
    napi_create_int32(env, status, &argv[0]);
    napi_create_int32(env, events, &argv[1]);
    /* make_callback runs microtasks and reports exceptions through
     * process 'uncaughtException', as any libuv-driven callback in Node does. */
    napi_value result;
    napi_make_callback(env, NULL, recv, cb, 2, argv, &result);
  }
  napi_close_handle_scope(env, scope);
}

static watcher_t *unwrap_watcher(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, &data) != napi_ok) return NULL;
  return (watcher_t *)data;
}

/* new FdWatcher(fd, callback(status, events)) */
static napi_value watcher_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  int32_t fd;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "VHOST_NATIVE", "FdWatcher(fd, callback): bad fd");
    return NULL;
  }
  napi_valuetype t;
  CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, "VHOST_NATIVE", "FdWatcher(fd, callback): callback is not a function");
    return NULL;
  }
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof(*w));
  if (!w) {
    napi_throw_error(env, "VHOST_NATIVE", "out of memory");
    return NULL;
  }
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    free(w);
    napi_throw_error(env, "VHOST_NATIVE", uv_strerror(rc));
    return NULL;
  }
  w->poll.data = w;
  w->env = env;
  CHECK(env, napi_create_reference(env, argv[1], 1, &w->callback));
  CHECK(env, napi_wrap(env, self, w, NULL, NULL, NULL));
  /* Strong self-reference while the handle is open, so a watcher that is still
   * polling is never collected; close() drops it. */
  CHECK(env, napi_create_reference(env, self, 1, &w->self));
  return self;
}

/* watcher.start(events): UV_READABLE = 1, UV_WRITABLE = 2 */
static napi_value watcher_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  watcher_t *w = unwrap_watcher(env, info, &argc, argv);
  if (!w || w->closing) {
    napi_throw_error(env, "VHOST_NATIVE", "FdWatcher is closed");
    return NULL;
  }
  int32_t events = UV_READABLE;
  if (argc >= 1) napi_get_value_int32(env, argv[0], &events);
  int rc = uv_poll_start(&w->poll, events, watcher_event);
  if (rc != 0) {
    napi_throw_error(env, "VHOST_NATIVE", uv_strerror(rc));
    return NULL;
  }
  return NULL;
}

static napi_value watcher_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  watcher_t *w = unwrap_watcher(env, info, &argc, NULL);
  if (w && !w->closing) uv_poll_stop(&w->poll);
  return NULL;
}

/* Stops polling and releases the handle. The fd itself belongs to the caller and
 * must be closed after this (epoll forgets a closed fd on its own, but libuv's
 * bookkeeping must not outlive it). */
static napi_value watcher_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  void *data = NULL;
  CHECK(env, napi_get_cb_info(env, info, &argc, NULL, &self, NULL));
  if (napi_remove_wrap(env, self, &data) != napi_ok || data == NULL) return NULL;
  watcher_t *w = (watcher_t *)data;
  w->closing = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_delete_reference(env, w->self);
  uv_close((uv_handle_t *)&w->poll, watcher_free);
  return NULL;
}

/* externalArrayBuffer(address: bigint, length: number): ArrayBuffer
 * The memory is owned by the caller (an mmap); no finalizer frees it. */
static napi_value external_array_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint64_t addr;
  bool lossless;
  int64_t len;
  if (argc < 2 || napi_get_value_bigint_uint64(env, argv[0], &addr, &lossless) != napi_ok || !lossless ||
      napi_get_value_int64(env, argv[1], &len) != napi_ok || len < 0 || (uint64_t)len > (1ULL << 32) ||
      (addr == 0 && len != 0)) {
    napi_throw_range_error(env, "VHOST_NATIVE", "externalArrayBuffer(address, length): bad arguments");
    return NULL;
  }
  napi_value ab;
  CHECK(env, napi_create_external_arraybuffer(env, (void *)(uintptr_t)addr, (size_t)len, NULL, NULL, &ab));
  return ab;
}

static napi_value detach_array_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool detached = false;
  if (argc < 1) return NULL;
  if (napi_is_detached_arraybuffer(env, argv[0], &detached) == napi_ok && detached) return NULL;
  CHECK(env, napi_detach_arraybuffer(env, argv[0]));
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, watcher_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, watcher_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, watcher_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value ctor;
  CHECK(env, napi_define_class(env, "FdWatcher", NAPI_AUTO_LENGTH, watcher_new, NULL, 3, methods, &ctor));
  napi_property_descriptor props[] = {
      {"FdWatcher", NULL, NULL, NULL, NULL, ctor, napi_default, NULL},
      {"externalArrayBuffer", NULL, external_array_buffer, NULL, NULL, NULL, napi_default, NULL},
      {"detachArrayBuffer", NULL, detach_array_buffer, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, 3, props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
