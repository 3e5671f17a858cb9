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
#ifndef DHTNET_TUN_H
#define DHTNET_TUN_H

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

#define CHECK(call)                                                                                                \
  do {                                                                                                             \
    if ((call) != napi_ok) {                                                                                       \
      bool pending = false;                                                                                        \
      napi_is_exception_pending(env, &pending);                                                                    \
      if (!pending) napi_throw_error(env, "ERR_TUN_NAPI", "N-API call failed: " #call);                          \
      return NULL;                                                                                                 \
    }                                                                                                              \
  } while (0)

/* device.c: errors, lifetime, interface ioctls, writes */
void tun_throw_errno(napi_env env, int err, const char *syscall);
void tun_release_slab(tun_device *dev);
void tun_close(tun_device *dev);
void tun_finalize(napi_env env, void *data, void *hint);
void tun_on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg);
int tun_refresh_name(tun_device *dev);
int tun_if_ioctl(tun_device *dev, unsigned long request, struct ifreq *ifr);
int tun_query_mtu(tun_device *dev, int *mtu);
void tun_size_reads_for(tun_device *dev, int mtu);
int tun_write_packet(tun_device *dev, const void *data, size_t len);

/* reader.c: the uv_poll callback: batches of packets read into slabs, delivered to this.onpackets */
void tun_on_readable(uv_poll_t *handle, int status, int events);

#endif
