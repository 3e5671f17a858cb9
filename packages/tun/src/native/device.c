/* Errors, lifetime (close, finalizer, environment teardown), interface ioctls and writes of a TUN device. */
#include "tun.h"

/* ---- errors ------------------------------------------------------------------------------------------------- */

/* Throws an Error with .code (errno name), .errno and .syscall, as Node's own system errors. */
void tun_throw_errno(napi_env env, int err, const char *syscall) {
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

void tun_release_slab(tun_device *dev) {
  if (dev->slab_ref != NULL) napi_delete_reference(dev->env, dev->slab_ref);
  dev->slab_ref = NULL;
  dev->slab = NULL;
  dev->slab_size = dev->slab_used = 0;
}

/* Stops reading, closes the uv handle, then the fd (libuv wants the fd unwatched before it is closed). The kernel
 * removes a non-persistent TUN interface when its last fd closes. */
void tun_close(tun_device *dev) {
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
  tun_release_slab(dev);
  if (dev->meta_ref != NULL) napi_delete_reference(dev->env, dev->meta_ref);
  dev->meta_ref = NULL;
  dev->meta = NULL;
  if (dev->async_ctx != NULL) napi_async_destroy(dev->env, dev->async_ctx);
  dev->async_ctx = NULL;
}

void tun_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  tun_device *dev = data;
  tun_close(dev);
  dev->finalized = true;
  napi_delete_reference(env, dev->self);
  dev->self = NULL;
  maybe_free(dev);
}

/* Environment teardown: close what is open; on_handle_closed signals the end by removing the hook. */
void tun_on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  tun_close((tun_device *)arg);
}

/* ---- interface ioctls ----------------------------------------------------------------------------------------- */

/* Refreshes dev->name from the fd (the interface may have been renamed). Returns 0 or an errno. */
int tun_refresh_name(tun_device *dev) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(dev->fd, TUNGETIFF, &ifr) < 0) return errno;
  memcpy(dev->name, ifr.ifr_name, IFNAMSIZ);
  dev->name[IFNAMSIZ - 1] = '\0';
  return 0;
}

/* An interface ioctl (SIOC[GS]IF*) through a short-lived datagram socket of this network namespace. */
int tun_if_ioctl(tun_device *dev, unsigned long request, struct ifreq *ifr) {
  int err = tun_refresh_name(dev);
  if (err != 0) return err;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0 && errno == EAFNOSUPPORT) s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0); /* IPv4 compiled out */
  if (s < 0) return errno;
  memcpy(ifr->ifr_name, dev->name, IFNAMSIZ);
  err = ioctl(s, request, ifr) < 0 ? errno : 0;
  close(s);
  return err;
}

int tun_query_mtu(tun_device *dev, int *mtu) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int err = tun_if_ioctl(dev, SIOCGIFMTU, &ifr);
  if (err == 0) *mtu = ifr.ifr_mtu;
  return err;
}

void tun_size_reads_for(tun_device *dev, int mtu) {
  size_t size = (size_t)(mtu > 0 ? mtu : 1500) + READ_HEADROOM;
  dev->read_size = size > MAX_PACKET ? MAX_PACKET : size;
}

/* One packet, one write(). Returns 0 on success, or the errno: counted as a drop (queue full) or a write error. */
int tun_write_packet(tun_device *dev, const void *data, size_t len) {
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
