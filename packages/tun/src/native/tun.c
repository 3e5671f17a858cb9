/*
 * Linux TUN devices for Node (N-API, plain C).
 *
 * One TunHandle per device, nothing global: the constructor opens the clone device (/dev/net/tun) non-blocking and
 * close-on-exec and attaches it to an interface with TUNSETIFF (IFF_TUN | IFF_NO_PI: raw IP packets, no header).
 *
 * Reading goes through the Node event loop: a libuv uv_poll_t watches the fd; on each readable wake-up we read()
 * until EAGAIN or `batch_limit` packets, straight into a "slab" Buffer (no copy after the kernel's), and hand the
 * whole batch to JS in one call: this.onpackets(slab, count), the offset/length of packet i being in the shared
 * Uint32Array `meta` at [2i, 2i+1]. The JS side makes Buffer views (subarray) of the slab. A slab is reused for the
 * next wake-ups until it has less room than one maximal read, then a new one is allocated; a packet view kept by
 * JS keeps its slab alive (like Buffer.allocUnsafe's pool).
 *
 * Writing is one non-blocking write() per packet (the TUN takes one packet per write); a full queue (EAGAIN,
 * ENOBUFS, ENOMEM) or a down interface (EIO) drops the packet and counts it, never blocks, never queues.
 *
 * Lifetime: while reading, the handle holds a strong reference to its JS object (like a libuv handle in Node: an
 * active reader is in use); otherwise the reference is weak and a forgotten handle is closed by its finalizer. The
 * C struct is freed once both the JS object is finalized and the uv handle is closed. At environment teardown (a
 * worker thread ending) an async cleanup hook closes what is still open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <node_api.h>
#include <uv.h>

/* A read never gets less room than MTU + READ_HEADROOM, so an MTU raised behind our back by up to this much still
 * reads whole packets; a larger packet is cut by the kernel (which then reports the room as the length): we see it
 * (see was_cut), drop and count it, and the read size follows the new MTU. */
#define READ_HEADROOM 256
#define SLAB_MIN_SIZE (256 * 1024)
#define SLAB_MIN_READS 8
#define MAX_PACKET 65535

typedef struct tun_device {
  napi_env env;
  uv_poll_t poll;
  int fd;
  bool closed;        /* close ran: fd closed, the uv handle closing */
  bool reading;       /* the poll is started and `self` is strong */
  bool finalized;     /* the JS object is gone */
  bool handle_closed; /* the uv close callback ran */
  bool loop_ref;      /* keep the event loop alive while reading (default) */
  napi_ref self;      /* the JS object (from napi_wrap): weak unless reading */
  napi_ref meta_ref;  /* Uint32Array shared with JS: offset/length pairs of one batch */
  uint32_t *meta;
  uint32_t batch_limit;
  napi_ref slab_ref; /* the Buffer packets are read into */
  uint8_t *slab;
  size_t slab_size, slab_used;
  size_t read_size;
  napi_async_context async_ctx;
  napi_async_cleanup_hook_handle cleanup_hook;
  char name[IFNAMSIZ];
  uint64_t packets_in, bytes_in, packets_out, bytes_out;
  uint64_t drops, write_errors, read_truncated, read_batches;
} tun_device;

/* ---- errors ------------------------------------------------------------------------------------------------- */

/* Throws an Error with .code (errno name), .errno and .syscall, as Node's own system errors. */
static void throw_errno(napi_env env, int err, const char *syscall) {
  char code[64], message[256];
  uv_err_name_r(-err, code, sizeof code);
  snprintf(message, sizeof message, "%s: %s (%s)", syscall, strerror(err), code);
  napi_value msg, code_v, errno_v, syscall_v, error;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_int32(env, err, &errno_v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_v);
  napi_create_error(env, code_v, msg, &error);
  napi_set_named_property(env, error, "errno", errno_v);
  napi_set_named_property(env, error, "syscall", syscall_v);
  napi_throw(env, error);
}

#define CHECK(call)                                                                                                \
  do {                                                                                                             \
    if ((call) != napi_ok) {                                                                                       \
      bool pending = false;                                                                                        \
      napi_is_exception_pending(env, &pending);                                                                    \
      if (!pending) napi_throw_error(env, "ERR_TUN_NAPI", "N-API call failed: " #call);                          \
      return NULL;                                                                                                 \
    }                                                                                                              \
  } while (0)

/* ---- lifetime ----------------------------------------------------------------------------------------------- */

static void maybe_free(tun_device *dev) {
  if (dev->finalized && dev->handle_closed) free(dev);
}

static void on_handle_closed(uv_handle_t *handle) {
  tun_device *dev = handle->data;
  dev->handle_closed = true;
  if (dev->cleanup_hook != NULL) {
    napi_remove_async_cleanup_hook(dev->cleanup_hook);
    dev->cleanup_hook = NULL;
  }
  maybe_free(dev);
}

static void release_slab(tun_device *dev) {
  if (dev->slab_ref != NULL) napi_delete_reference(dev->env, dev->slab_ref);
  dev->slab_ref = NULL;
  dev->slab = NULL;
  dev->slab_size = dev->slab_used = 0;
}

/* Stops reading, closes the uv handle, then the fd (libuv wants the fd unwatched before it is closed). The kernel
 * removes a non-persistent TUN interface when its last fd closes. */
static void do_close(tun_device *dev) {
  if (dev->closed) return;
  dev->closed = true;
  if (dev->reading) {
    uv_poll_stop(&dev->poll);
    dev->reading = false;
    if (!dev->finalized) napi_reference_unref(dev->env, dev->self, NULL);
  }
  uv_close((uv_handle_t *)&dev->poll, on_handle_closed);
  close(dev->fd);
  dev->fd = -1;
  release_slab(dev);
  if (dev->meta_ref != NULL) napi_delete_reference(dev->env, dev->meta_ref);
  dev->meta_ref = NULL;
  dev->meta = NULL;
  if (dev->async_ctx != NULL) napi_async_destroy(dev->env, dev->async_ctx);
  dev->async_ctx = NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  tun_device *dev = data;
  do_close(dev);
  dev->finalized = true;
  napi_delete_reference(env, dev->self);
  dev->self = NULL;
  maybe_free(dev);
}

/* Environment teardown: close what is open; on_handle_closed signals the end by removing the hook. */
static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  do_close((tun_device *)arg);
}

/* ---- interface ioctls ----------------------------------------------------------------------------------------- */

/* Refreshes dev->name from the fd (the interface may have been renamed). Returns 0 or an errno. */
static int refresh_name(tun_device *dev) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(dev->fd, TUNGETIFF, &ifr) < 0) return errno;
  memcpy(dev->name, ifr.ifr_name, IFNAMSIZ);
  dev->name[IFNAMSIZ - 1] = '\0';
  return 0;
}

/* An interface ioctl (SIOC[GS]IF*) through a short-lived datagram socket of this network namespace. */
static int if_ioctl(tun_device *dev, unsigned long request, struct ifreq *ifr) {
  int err = refresh_name(dev);
  if (err != 0) return err;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0 && errno == EAFNOSUPPORT) s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0); /* IPv4 compiled out */
  if (s < 0) return errno;
  memcpy(ifr->ifr_name, dev->name, IFNAMSIZ);
  err = ioctl(s, request, ifr) < 0 ? errno : 0;
  close(s);
  return err;
}

static int query_mtu(tun_device *dev, int *mtu) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int err = if_ioctl(dev, SIOCGIFMTU, &ifr);
  if (err == 0) *mtu = ifr.ifr_mtu;
  return err;
}

static void size_reads_for(tun_device *dev, int mtu) {
  size_t size = (size_t)(mtu > 0 ? mtu : 1500) + READ_HEADROOM;
  dev->read_size = size > MAX_PACKET ? MAX_PACKET : size;
}

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
  release_slab(dev);
  size_t size = dev->read_size * SLAB_MIN_READS;
  if (size < SLAB_MIN_SIZE) size = SLAB_MIN_SIZE;
  napi_value buffer;
  void *data;
  if (napi_create_buffer(dev->env, size, &data, &buffer) != napi_ok) return false;
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

static void on_readable(uv_poll_t *handle, int status, int events) {
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
        if (query_mtu(dev, &mtu) == 0) size_reads_for(dev, mtu);
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

/* ---- JS methods ---------------------------------------------------------------------------------------------- */

static tun_device *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a TunHandle");
    return NULL;
  }
  return data;
}

static tun_device *unwrap_open(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  tun_device *dev = unwrap(env, info, argc, argv);
  if (dev != NULL && dev->closed) {
    throw_errno(env, EBADF, "closed");
    return NULL;
  }
  return dev;
}

/* new TunHandle(path, name, meta): name "" lets the kernel choose (tun%d); meta.length / 2 is the batch limit. */
static napi_value construct(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  char path[4096], name[IFNAMSIZ + 1];
  size_t len;
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], name, sizeof name, &len) != napi_ok || len >= IFNAMSIZ) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "TunHandle(path: string, name: string (< 16 bytes), meta: Uint32Array)");
    return NULL;
  }
  bool is_typed = false;
  napi_typedarray_type ta_type;
  size_t meta_len;
  void *meta_data;
  napi_value meta_ab;
  size_t meta_off;
  napi_is_typedarray(env, argv[2], &is_typed);
  if (!is_typed || napi_get_typedarray_info(env, argv[2], &ta_type, &meta_len, &meta_data, &meta_ab, &meta_off) != napi_ok ||
      ta_type != napi_uint32_array || meta_len < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "meta must be a Uint32Array of at least 2 elements");
    return NULL;
  }

  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  memcpy(ifr.ifr_name, name, len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ioctl(TUNSETIFF)");
    return NULL;
  }

  tun_device *dev = calloc(1, sizeof *dev);
  if (dev == NULL) {
    close(fd);
    throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  dev->env = env;
  dev->fd = fd;
  dev->loop_ref = true;
  dev->meta = meta_data;
  dev->batch_limit = (uint32_t)(meta_len / 2);
  memcpy(dev->name, ifr.ifr_name, IFNAMSIZ);
  dev->name[IFNAMSIZ - 1] = '\0';
  int mtu = 1500;
  query_mtu(dev, &mtu);
  size_reads_for(dev, mtu);

  uv_loop_t *loop;
  napi_value resource_name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &dev->poll, fd) != 0) {
    close(fd);
    free(dev);
    napi_throw_error(env, "ERR_TUN_UV", "uv_poll_init failed");
    return NULL;
  }
  dev->poll.data = dev;
  /* From here on the struct is freed by finalize + on_handle_closed; a failure below closes it through do_close. */
  if (napi_wrap(env, self, dev, finalize, NULL, &dev->self) != napi_ok) {
    dev->finalized = true;
    do_close(dev);
    napi_throw_error(env, "ERR_TUN_NAPI", "napi_wrap failed");
    return NULL;
  }
  CHECK(napi_create_reference(env, argv[2], 1, &dev->meta_ref));
  CHECK(napi_create_string_utf8(env, "TunDevice", NAPI_AUTO_LENGTH, &resource_name));
  /* no resource object: a context holding `self` could keep it from being collected */
  CHECK(napi_async_init(env, NULL, resource_name, &dev->async_ctx));
  CHECK(napi_add_async_cleanup_hook(env, on_env_teardown, dev, &dev->cleanup_hook));
  return self;
}

static napi_value get_name(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  if (!dev->closed) refresh_name(dev); /* on failure: the last name we knew */
  napi_value result;
  CHECK(napi_create_string_utf8(env, dev->name, NAPI_AUTO_LENGTH, &result));
  return result;
}

static napi_value get_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  int mtu, err = query_mtu(dev, &mtu);
  if (err != 0) {
    throw_errno(env, err, "ioctl(SIOCGIFMTU)");
    return NULL;
  }
  if (mtu + READ_HEADROOM > (int)dev->read_size) size_reads_for(dev, mtu);
  napi_value result;
  CHECK(napi_create_int32(env, mtu, &result));
  return result;
}

static napi_value set_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_device *dev = unwrap_open(env, info, &argc, argv);
  if (dev == NULL) return NULL;
  int32_t mtu;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &mtu) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setMtu(mtu: number)");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_mtu = mtu;
  int err = if_ioctl(dev, SIOCSIFMTU, &ifr);
  if (err != 0) {
    throw_errno(env, err, "ioctl(SIOCSIFMTU)");
    return NULL;
  }
  size_reads_for(dev, mtu);
  return NULL;
}

static napi_value get_up(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int err = if_ioctl(dev, SIOCGIFFLAGS, &ifr);
  if (err != 0) {
    throw_errno(env, err, "ioctl(SIOCGIFFLAGS)");
    return NULL;
  }
  napi_value result;
  CHECK(napi_get_boolean(env, (ifr.ifr_flags & IFF_UP) != 0, &result));
  return result;
}

static napi_value set_up(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_device *dev = unwrap_open(env, info, &argc, argv);
  if (dev == NULL) return NULL;
  bool up;
  if (argc < 1 || napi_get_value_bool(env, argv[0], &up) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setUp(up: boolean)");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int err = if_ioctl(dev, SIOCGIFFLAGS, &ifr);
  if (err == 0) {
    if (up) ifr.ifr_flags |= IFF_UP;
    else ifr.ifr_flags &= ~IFF_UP;
    err = if_ioctl(dev, SIOCSIFFLAGS, &ifr);
  }
  if (err != 0) {
    throw_errno(env, err, "ioctl(SIOCSIFFLAGS)");
    return NULL;
  }
  return NULL;
}

static napi_value start_reading(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL || dev->reading) return NULL;
  int err = uv_poll_start(&dev->poll, UV_READABLE, on_readable);
  if (err != 0) {
    throw_errno(env, -err, "uv_poll_start");
    return NULL;
  }
  dev->reading = true;
  CHECK(napi_reference_ref(env, dev->self, NULL));
  return NULL;
}

static napi_value stop_reading(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap(env, info, &argc, NULL);
  if (dev == NULL || !dev->reading || dev->closed) return NULL;
  uv_poll_stop(&dev->poll);
  dev->reading = false;
  CHECK(napi_reference_unref(env, dev->self, NULL));
  return NULL;
}

static napi_value set_loop_ref(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_device *dev = unwrap(env, info, &argc, argv);
  if (dev == NULL || dev->closed) return NULL;
  bool keep;
  if (argc < 1 || napi_get_value_bool(env, argv[0], &keep) != napi_ok) return NULL;
  dev->loop_ref = keep;
  if (keep) uv_ref((uv_handle_t *)&dev->poll);
  else uv_unref((uv_handle_t *)&dev->poll);
  return NULL;
}

/* One packet, one write(). Returns 0 on success, or the errno: counted as a drop (queue full) or a write error. */
static int write_packet(tun_device *dev, const void *data, size_t len) {
  for (;;) {
    ssize_t n = write(dev->fd, data, len);
    if (n >= 0) {
      dev->packets_out++;
      dev->bytes_out += (uint64_t)n;
      return 0;
    }
    int err = errno;
    if (err == EINTR) continue;
    /* queue full, or EIO: the interface is down (a VPN may get packets while it is): drop this one */
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ENOMEM || err == EIO) dev->drops++;
    else dev->write_errors++;
    return err;
  }
}

static bool packet_bytes(napi_env env, napi_value value, void **data, size_t *len) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return false;
  if (napi_get_typedarray_info(env, value, &type, len, data, &ab, &offset) != napi_ok) return false;
  return type == napi_uint8_array || type == napi_uint8_clamped_array || type == napi_int8_array;
}

/* write(packet) → 0, or the errno (positive) when the kernel did not take it. */
static napi_value write_one(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_device *dev = unwrap_open(env, info, &argc, argv);
  if (dev == NULL) return NULL;
  void *data;
  size_t len;
  if (argc < 1 || !packet_bytes(env, argv[0], &data, &len)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "write(packet: Uint8Array)");
    return NULL;
  }
  napi_value result;
  CHECK(napi_create_int32(env, write_packet(dev, data, len), &result));
  return result;
}

/* writeMany(packets, results: Int32Array) → how many the kernel took; results[i] = 0 or the errno of packet i. */
static napi_value write_many(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  tun_device *dev = unwrap_open(env, info, &argc, argv);
  if (dev == NULL) return NULL;
  bool is_array = false;
  uint32_t count;
  napi_typedarray_type rtype;
  size_t rlen, roff;
  void *rdata;
  napi_value rab;
  if (argc < 2 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &count) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &rtype, &rlen, &rdata, &rab, &roff) != napi_ok ||
      rtype != napi_int32_array || rlen < count) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeMany(packets: Uint8Array[], results: Int32Array)");
    return NULL;
  }
  int32_t *results = rdata;
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    void *data;
    size_t len;
    CHECK(napi_get_element(env, argv[0], i, &element));
    if (!packet_bytes(env, element, &data, &len)) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeMany: every packet must be a Uint8Array");
      return NULL;
    }
    results[i] = write_packet(dev, data, len);
    if (results[i] == 0) written++;
  }
  napi_value result;
  CHECK(napi_create_uint32(env, written, &result));
  return result;
}

static napi_value stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  napi_value result, v;
  CHECK(napi_create_object(env, &result));
#define STAT(field, key)                                                                                           \
  CHECK(napi_create_double(env, (double)dev->field, &v));                                                          \
  CHECK(napi_set_named_property(env, result, key, v))
  STAT(packets_in, "packetsIn");
  STAT(bytes_in, "bytesIn");
  STAT(packets_out, "packetsOut");
  STAT(bytes_out, "bytesOut");
  STAT(drops, "drops");
  STAT(write_errors, "writeErrors");
  STAT(read_truncated, "readTruncated");
  STAT(read_batches, "readBatches");
  STAT(read_size, "readSize");
#undef STAT
  return result;
}

static napi_value close_device(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap(env, info, &argc, NULL);
  if (dev != NULL) do_close(dev);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"name", NULL, get_name, NULL, NULL, NULL, napi_default, NULL},
      {"getMtu", NULL, get_mtu, NULL, NULL, NULL, napi_default, NULL},
      {"setMtu", NULL, set_mtu, NULL, NULL, NULL, napi_default, NULL},
      {"isUp", NULL, get_up, NULL, NULL, NULL, napi_default, NULL},
      {"setUp", NULL, set_up, NULL, NULL, NULL, napi_default, NULL},
      {"startReading", NULL, start_reading, NULL, NULL, NULL, napi_default, NULL},
      {"stopReading", NULL, stop_reading, NULL, NULL, NULL, napi_default, NULL},
      {"setLoopRef", NULL, set_loop_ref, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, write_one, NULL, NULL, NULL, napi_default, NULL},
      {"writeMany", NULL, write_many, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, stats, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, close_device, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "TunHandle", NAPI_AUTO_LENGTH, construct, NULL, sizeof methods / sizeof methods[0],
                        methods, &cls) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "TunHandle", cls) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
