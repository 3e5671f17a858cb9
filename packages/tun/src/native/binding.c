/* The JS class TunHandle: constructor (open + TUNSETIFF) and methods, each a thin wrapper of device.c/reader.c. */
#include "tun.h"

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
    tun_throw_errno(env, EBADF, "closed");
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
    tun_throw_errno(env, errno, "open");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  memcpy(ifr.ifr_name, name, len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    tun_throw_errno(env, err, "ioctl(TUNSETIFF)");
    return NULL;
  }

  tun_device *dev = calloc(1, sizeof *dev);
  if (dev == NULL) {
    close(fd);
    tun_throw_errno(env, ENOMEM, "calloc");
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
  tun_query_mtu(dev, &mtu);
  tun_size_reads_for(dev, mtu);

  uv_loop_t *loop;
  napi_value resource_name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &dev->poll, fd) != 0) {
    close(fd);
    free(dev);
    napi_throw_error(env, "ERR_TUN_UV", "uv_poll_init failed");
    return NULL;
  }
  dev->poll.data = dev;
  /* From here on the struct is freed by tun_finalize + on_handle_closed; a failure below closes it through tun_close. */
  if (napi_wrap(env, self, dev, tun_finalize, NULL, &dev->self) != napi_ok) {
    dev->finalized = true;
    tun_close(dev);
    napi_throw_error(env, "ERR_TUN_NAPI", "napi_wrap failed");
    return NULL;
  }
  CHECK(napi_create_reference(env, argv[2], 1, &dev->meta_ref));
  CHECK(napi_create_string_utf8(env, "TunDevice", NAPI_AUTO_LENGTH, &resource_name));
  /* no resource object: a context holding `self` could keep it from being collected */
  CHECK(napi_async_init(env, NULL, resource_name, &dev->async_ctx));
  CHECK(napi_add_async_cleanup_hook(env, tun_on_env_teardown, dev, &dev->cleanup_hook));
  return self;
}

static napi_value get_name(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  if (!dev->closed) tun_refresh_name(dev); /* on failure: the last name we knew */
  napi_value result;
  CHECK(napi_create_string_utf8(env, dev->name, NAPI_AUTO_LENGTH, &result));
  return result;
}

static napi_value get_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  int mtu, err = tun_query_mtu(dev, &mtu);
  if (err != 0) {
    tun_throw_errno(env, err, "ioctl(SIOCGIFMTU)");
    return NULL;
  }
  if (mtu + READ_HEADROOM > (int)dev->read_size) tun_size_reads_for(dev, mtu);
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
  int err = tun_if_ioctl(dev, SIOCSIFMTU, &ifr);
  if (err != 0) {
    tun_throw_errno(env, err, "ioctl(SIOCSIFMTU)");
    return NULL;
  }
  tun_size_reads_for(dev, mtu);
  return NULL;
}

static napi_value get_up(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int err = tun_if_ioctl(dev, SIOCGIFFLAGS, &ifr);
  if (err != 0) {
    tun_throw_errno(env, err, "ioctl(SIOCGIFFLAGS)");
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
  int err = tun_if_ioctl(dev, SIOCGIFFLAGS, &ifr);
  if (err == 0) {
    if (up) ifr.ifr_flags |= IFF_UP;
    else ifr.ifr_flags &= ~IFF_UP;
    err = tun_if_ioctl(dev, SIOCSIFFLAGS, &ifr);
  }
  if (err != 0) {
    tun_throw_errno(env, err, "ioctl(SIOCSIFFLAGS)");
    return NULL;
  }
  return NULL;
}

static napi_value start_reading(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_device *dev = unwrap_open(env, info, &argc, NULL);
  if (dev == NULL || dev->reading) return NULL;
  int err = uv_poll_start(&dev->poll, UV_READABLE, tun_on_readable);
  if (err != 0) {
    tun_throw_errno(env, -err, "uv_poll_start");
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
  CHECK(napi_create_int32(env, tun_write_packet(dev, data, len), &result));
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
    results[i] = tun_write_packet(dev, data, len);
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
  if (dev != NULL) tun_close(dev);
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
