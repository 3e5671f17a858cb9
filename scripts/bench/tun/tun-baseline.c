/*
 * Baseline for the TUN benchmark: the same work as worker.ts in plain C (poll + read/write on the TUN fds, no Node),
 * so the table shows what the addon and JS add on top of the kernel. Compiled by `run` with cc -O2.
 *
 *   tun-baseline forward <count> <size> <window> <batch>
 *       opens tbA and tbB (the namespace routes 10.2.0.2 via tbB, see run), writes <count> UDP packets of <size> bytes
 *       10.1.0.2 → 10.2.0.2 into tbA (as if they arrived there) keeping at most <window> in flight, reads them from tbB
 *       (up to <batch> per poll wake-up); prints one JSON line.
 *   tun-baseline echo <seconds>
 *       opens tbC and answers every ICMP echo request read from it (for `ping -f`) until a second line on stdin or
 *       <seconds>; prints stats.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int open_tun(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { perror("open /dev/net/tun"); exit(1); }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(1); }
  return fd;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint16_t csum(const uint8_t *p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += (uint32_t)(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/* Tells `run` the devices exist (it then configures addresses and routes), and waits for its go on stdin. */
static void ready_then_wait(void) {
  printf("{\"ready\":true}\n");
  fflush(stdout);
  char line[64];
  if (fgets(line, sizeof line, stdin) == NULL) exit(1);
}

static int forward(long count, int size, int window, int batch) {
  int a = open_tun("tbA"), b = open_tun("tbB");
  ready_then_wait();
  uint8_t pkt[65536], buf[65536];
  memset(pkt, 0, sizeof pkt);
  pkt[0] = 0x45;
  pkt[2] = (uint8_t)(size >> 8);
  pkt[3] = (uint8_t)size;
  pkt[6] = 0x40;
  pkt[8] = 64;
  pkt[9] = 17;
  uint8_t src[4] = {10, 1, 0, 2}, dst[4] = {10, 2, 0, 2};
  memcpy(pkt + 12, src, 4);
  memcpy(pkt + 16, dst, 4);
  uint16_t c = csum(pkt, 20);
  pkt[10] = (uint8_t)(c >> 8);
  pkt[11] = (uint8_t)c;
  pkt[20] = 0x30; pkt[21] = 0x39; pkt[22] = 0x30; pkt[23] = 0x3a; /* ports 12345 → 12346 */
  pkt[24] = (uint8_t)((size - 20) >> 8);
  pkt[25] = (uint8_t)(size - 20);

  /* lost: packets the kernel dropped on the way (no progress for 1 s: given up on, so the run always ends) */
  long sent = 0, got = 0, lost = 0, write_drops = 0, wakeups = 0;
  double start = now_s(), last_progress = start;
  while (got + lost < count) {
    while (sent < count && sent - got - lost < window) {
      if (write(a, pkt, (size_t)size) == size) sent++;
      else { write_drops++; break; }
    }
    struct pollfd pfd = {.fd = b, .events = POLLIN};
    int r = poll(&pfd, 1, 200);
    if (r < 0 && errno != EINTR) { perror("poll"); return 1; }
    if (r > 0) {
      wakeups++;
      for (int i = 0; i < batch; i++) {
        if (read(b, buf, sizeof buf) < 0) break;
        got++;
      }
      last_progress = now_s();
    }
    if (now_s() - last_progress > 1.0) {
      lost += sent - got - lost;
      last_progress = now_s();
    }
  }
  double elapsed = now_s() - start;
  printf("{\"pps\":%.0f,\"seconds\":%.3f,\"received\":%ld,\"lost\":%ld,\"writeDrops\":%ld,\"avgBatch\":%.1f}\n",
         (double)got / elapsed, elapsed, got, lost, write_drops, wakeups ? (double)got / (double)wakeups : 0.0);
  return 0;
}

static int echo(double seconds) {
  int fd = open_tun("tbC");
  ready_then_wait();
  uint8_t buf[65536];
  long replies = 0;
  double end = now_s() + seconds;
  while (now_s() < end) {
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    if (poll(pfd, 2, 100) <= 0) continue;
    if (pfd[1].revents) break; /* a line on stdin: stop */
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0) break;
      if (n < 28 || buf[0] >> 4 != 4 || buf[9] != 1) continue;
      size_t ihl = (size_t)(buf[0] & 15) * 4, total = (size_t)(buf[2] << 8 | buf[3]);
      if (buf[ihl] != 8 || total > (size_t)n) continue;
      uint8_t tmp[4];
      memcpy(tmp, buf + 12, 4);
      memcpy(buf + 12, buf + 16, 4);
      memcpy(buf + 16, tmp, 4);
      buf[8] = 64;
      buf[10] = buf[11] = 0;
      uint16_t c = csum(buf, ihl);
      buf[10] = (uint8_t)(c >> 8); buf[11] = (uint8_t)c;
      buf[ihl] = 0;
      buf[ihl + 2] = buf[ihl + 3] = 0;
      c = csum(buf + ihl, total - ihl);
      buf[ihl + 2] = (uint8_t)(c >> 8); buf[ihl + 3] = (uint8_t)c;
      if (write(fd, buf, total) == (ssize_t)total) replies++;
    }
  }
  printf("{\"replies\":%ld}\n", replies);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 6 && strcmp(argv[1], "forward") == 0) return forward(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) return echo(atof(argv[2]));
  fprintf(stderr, "usage: tun-baseline forward <count> <size> <window> <batch> | echo <seconds>\n");
  return 2;
}
