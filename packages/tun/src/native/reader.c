/* Reading: the uv_poll callback reads batches of packets straight into slab Buffers and hands them to JS. */
#include "tun.h"


/* The kernel copies at most `room` bytes of a packet and then returns min(packet length, room): a read that fills
 * the room may have been cut. The IP header says how long the packet really was. */
static bool was_cut(const uint8_t *p, size_t n, size_t room) {
  if (n < room) return false;
  if (n >= 20 && (p[0] >> 4) == 4) return (size_t)((p[2] << 8) | p[3]) > n;
  if (n >= 40 && (p[0] >> 4) == 6) return 40 + (size_t)((p[4] << 8) | p[5]) > n;
  return true;
}

/* ---- reading ----------------------------------------------------------------------------------------------- */

static bool new_slab(tun_device *dev) {
  tun_release_slab(dev);
  size_t size = dev->read_size * SLAB_MIN_READS;
  if (size < SLAB_MIN_SIZE) size = SLAB_MIN_SIZE;
  napi_value buffer;
  void *data;
  if (napi_create_buffer(dev->env, size, &data, &buffer) != napi_ok) {
    napi_value ignored; /* out of memory: reported as a read error (ENOMEM), not as a stray JS exception */
    napi_get_and_clear_last_exception(dev->env, &ignored);
    return false;
  }
  if (napi_create_reference(dev->env, buffer, 1, &dev->slab_ref) != napi_ok) return false;
  dev->slab = data;
  dev->slab_size = size;
  dev->slab_used = 0;
  return true;
}

/* Calls this[method](...argv) as a top-level callback (microtasks, async hooks); an exception becomes uncaught. */
static void call_js(tun_device *dev, napi_value self, const char *method, size_t argc, napi_value *argv) {
  napi_env env = dev->env;
  napi_value fn;
  napi_valuetype type;
  if (napi_get_named_property(env, self, method, &fn) != napi_ok || napi_typeof(env, fn, &type) != napi_ok ||
      type != napi_function)
    return;
  napi_status status = napi_make_callback(env, dev->async_ctx, self, fn, argc, argv, NULL);
  if (status == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception);
  }
}

static void deliver(tun_device *dev, napi_value self, uint32_t count) {
  napi_value argv[2];
  if (napi_get_reference_value(dev->env, dev->slab_ref, &argv[0]) != napi_ok || argv[0] == NULL) return;
  napi_create_uint32(dev->env, count, &argv[1]);
  dev->read_batches++;
  call_js(dev, self, "onpackets", 2, argv);
}

static void report_read_error(tun_device *dev, napi_value self, int err, const char *syscall) {
  napi_env env = dev->env;
  if (dev->reading) {
    uv_poll_stop(&dev->poll);
    dev->reading = false;
    napi_reference_unref(env, dev->self, NULL);
  }
  char code[64];
  uv_err_name_r(-err, code, sizeof code);
  napi_value argv[3];
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &argv[1]);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &argv[2]);
  call_js(dev, self, "onerror", 3, argv);
}

void tun_on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  tun_device *dev = handle->data;
  if (dev->closed || !dev->reading) return;
  napi_env env = dev->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self;
  if (napi_get_reference_value(env, dev->self, &self) != napi_ok || self == NULL) goto out;
  if (status < 0) { /* POLLERR: the interface was deleted under us; libuv has stopped the poll */
    report_read_error(dev, self, -status, "poll");
    goto out;
  }
  uint32_t attempts = 0; /* reads this wake-up, truncated ones included: the bound on work per wake-up */
  bool drained = false;
  while (!drained && attempts < dev->batch_limit && dev->reading && !dev->closed) {
    uint32_t count = 0;
    int err = 0;
    while (attempts < dev->batch_limit) {
      if (dev->slab == NULL || dev->slab_size - dev->slab_used < dev->read_size) {
        if (count > 0) break; /* deliver this slab's packets first, then continue in a new slab */
        if (!new_slab(dev)) {
          err = ENOMEM;
          break;
        }
      }
      ssize_t n = read(dev->fd, dev->slab + dev->slab_used, dev->read_size);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) drained = true;
        else err = errno;
        break;
      }
      attempts++;
      if (n == 0) {
        drained = true;
        break;
      }
      if (was_cut(dev->slab + dev->slab_used, (size_t)n, dev->read_size)) {
        dev->read_truncated++;
        int mtu;
        if (tun_query_mtu(dev, &mtu) == 0) tun_size_reads_for(dev, mtu);
        continue;
      }
      dev->meta[2 * count] = (uint32_t)dev->slab_used;
      dev->meta[2 * count + 1] = (uint32_t)n;
      dev->slab_used += ((size_t)n + 7) & ~(size_t)7;
      if (dev->slab_used > dev->slab_size) dev->slab_used = dev->slab_size;
      dev->packets_in++;
      dev->bytes_in += (uint64_t)n;
      count++;
    }
    if (count > 0) deliver(dev, self, count);
    if (err != 0 && !dev->closed) {
      report_read_error(dev, self, err, "read");
      break;
    }
  }
out:
  napi_close_handle_scope(env, scope);
}
