// seqrun: runs oracle sequences (oracle/README.md) on the real kernel and prints one JSON line
// per step, prefixed with "@@ " so the runner can pick them out of the serial console.
// Struct layouts come from uapi_layouts.h, generated from the simulator's uAPI and checked
// against the real headers at compile time (a wrong offset or name does not build).
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/liveupdate.h>
#include <linux/reboot.h>
#include <linux/vfio.h>

// `bytes`: an inline byte array (`__u8 name[64]`), filled from str(...)/hex(...), printed as hex.
struct field { const char *name; unsigned off, size; int out; int bytes; };
struct layout { const char *name; unsigned long request; unsigned size; const struct field *fields; };
#include "uapi_layouts.h"

#define ARENA_BASE 0x100000000ull /* mmap places mappings here, 2 MiB apart (same on both sides) */
#define ARENA_ALIGN 0x200000ull
#define EDU_BUF 0x40000ull
#define EDU_MAX 2048u /* QEMU 7.2's edu misbehaves on a full 4096-byte transfer */

static uint64_t arena_next;
static int open_fds[256], n_open;
struct mapping { uint64_t va, len; } maps[256];
static int n_maps;
struct var { char name[64]; uint64_t v; } vars[1024];
static int n_vars;
static const char *seq_name = "";
static int step;
static char cur_file[256]; /* the running file's name within its directory (for `kexec`) */
// `-r FILE:SEQUENCE:STEP` (the kernel command line's oracle_resume=, after a `kexec` step):
// skip to that step of that sequence, print the kexec step's answer, go on from there.
static const char *resume_file, *resume_seq;
static int resume_step = -1;
static int kmsg_fd = -1;

// Per device fd: the edu BAR0, mapped on first DMA.
struct edu { int fd; volatile uint8_t *bar; size_t bar_len; } edus[8];
static int n_edus;

static void die(const char *fmt, ...) {
  va_list ap; va_start(ap, fmt);
  printf("@@ {\"seq\":\"%s\",\"step\":%d,\"error\":\"", seq_name, step);
  vprintf(fmt, ap); printf("\"}\n"); fflush(stdout); va_end(ap);
}

static void set_var(const char *name, uint64_t v) {
  for (int i = 0; i < n_vars; i++) if (!strcmp(vars[i].name, name)) { vars[i].v = v; return; }
  if (n_vars < 1024) { snprintf(vars[n_vars].name, sizeof vars[n_vars].name, "%s", name); vars[n_vars++].v = v; }
}

static int get_var(const char *name, uint64_t *v) {
  for (int i = 0; i < n_vars; i++) if (!strcmp(vars[i].name, name)) { *v = vars[i].v; return 0; }
  return -1;
}

// A number: decimal, 0x hex, -N, $var or $label.field, each optionally +N / -N.
static int parse_num(const char *s, uint64_t *out) {
  uint64_t acc = 0; int sign = 1; int first = 1;
  while (*s) {
    uint64_t v; char *end;
    if (*s == '$') {
      char name[64]; int n = 0; s++;
      while (*s && (isalnum((unsigned char)*s) || *s == '_' || *s == '.') && n < 63) name[n++] = *s++;
      name[n] = 0;
      if (get_var(name, &v)) return -1;
    } else {
      if (!isdigit((unsigned char)*s)) return -1;
      errno = 0; v = strtoull(s, &end, 0);
      if (errno || end == s) return -1;
      s = end;
    }
    acc = first ? (sign < 0 ? -v : v) : (sign < 0 ? acc - v : acc + v);
    first = 0;
    if (*s == '+') { sign = 1; s++; } else if (*s == '-') { sign = -1; s++; } else if (*s) return -1;
  }
  if (first) return -1;
  *out = acc; return 0;
}

static int parse_signed_first(const char *s, uint64_t *out) {
  if (s[0] == '-' && isdigit((unsigned char)s[1])) {
    uint64_t v; if (parse_num(s + 1, &v)) return -1; *out = -v; return 0;
  }
  return parse_num(s, out);
}

static int hexval(char c) { return isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10); }

static size_t parse_hex(const char *s, uint8_t *buf, size_t max) {
  size_t n = 0;
  while (s[0] && s[1] && n < max) { buf[n++] = hexval(s[0]) << 4 | hexval(s[1]); s += 2; }
  return n;
}

static void print_hex(const uint8_t *p, size_t n) { for (size_t i = 0; i < n; i++) printf("%02x", p[i]); }

// A byte-array field's value: `str(text)` (its bytes) or `hex(...)`, NUL-padded to `size`.
static int parse_bytes(const char *val, uint8_t *dst, size_t size) {
  size_t n = strlen(val), len = n - 5;
  if (n < 5 || val[n - 1] != ')') return -1;
  if (!strncmp(val, "str(", 4)) {
    if (len > size) return -1;
    memset(dst, 0, size); memcpy(dst, val + 4, len); return 0;
  }
  if (!strncmp(val, "hex(", 4)) {
    if (len % 2 || len / 2 > size) return -1;
    for (size_t i = 0; i < len; i++) if (!isxdigit((unsigned char)val[4 + i])) return -1;
    memset(dst, 0, size); parse_hex(val + 4, dst, len / 2); return 0;
  }
  return -1;
}

static const char *errname(int e) {
  switch (e) {
#define E(x) case x: return #x;
  E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC) E(EBADF) E(ECHILD)
  E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR)
  E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS)
  E(EMLINK) E(EPIPE) E(EDOM) E(ERANGE) E(EDEADLK) E(ENAMETOOLONG) E(ENOSYS) E(EOVERFLOW)
  E(EMSGSIZE) E(EOPNOTSUPP) E(EADDRINUSE) E(ETIMEDOUT) E(ECANCELED) E(ENODATA) E(EBADFD) E(ENOTEMPTY)
#undef E
  default: return "E?";
  }
}

static void begin(const char *op) { printf("@@ {\"seq\":\"%s\",\"step\":%d,\"op\":\"%s\"", seq_name, step, op); }
static void end_ok(long ret) { printf(",\"ret\":%ld}\n", ret); }
static void end_err(int e) { printf(",\"ret\":-1,\"errno\":\"%s\"}\n", errname(e)); }
static void end_str(const char *key, const char *val) { printf(",\"%s\":\"%s\"}\n", key, val); }

static void track_fd(int fd) { if (fd >= 0 && n_open < 256) open_fds[n_open++] = fd; }

// A BAR mapping holds the device file open (and so bound): unmap it with the fd.
static void edu_forget(int i) { munmap((void *)edus[i].bar, edus[i].bar_len); edus[i] = edus[--n_edus]; }

static int seq_file_fd = -1; /* the sequence file being read: not the sequence's */

// Closes every fd above stderr but kmsg's and the sequence file's: the fds ioctls returned
// (LUO sessions and retrieved files, fault queues) are the sequence's too.
static void close_the_rest(void) {
  int keep[2] = { kmsg_fd < seq_file_fd ? kmsg_fd : seq_file_fd, kmsg_fd < seq_file_fd ? seq_file_fd : kmsg_fd };
  unsigned lo = 3;
  for (int i = 0; i < 2; i++) {
    if (keep[i] < (int)lo) continue;
    if (keep[i] > (int)lo) syscall(SYS_close_range, lo, (unsigned)keep[i] - 1, 0);
    lo = keep[i] + 1;
  }
  syscall(SYS_close_range, lo, ~0u, 0);
}

static void reset_state(void) {
  while (n_edus) edu_forget(0);
  for (int i = n_open - 1; i >= 0; i--) close(open_fds[i]);
  n_open = 0;
  close_the_rest();
  // DMAR faults of this sequence that it did not ask for are not the next one's.
  if (kmsg_fd >= 0) lseek(kmsg_fd, 0, SEEK_END);
  for (int i = 0; i < n_maps; i++) munmap((void *)maps[i].va, maps[i].len);
  n_maps = 0; n_vars = 0; step = 0;
  arena_next = ARENA_BASE;
}

static const struct layout *find_layout(const char *name) {
  for (size_t i = 0; i < sizeof(LAYOUTS) / sizeof(LAYOUTS[0]); i++)
    if (!strcmp(LAYOUTS[i].name, name)) return &LAYOUTS[i];
  return NULL;
}

static uint64_t get_le(const uint8_t *p, unsigned size) {
  uint64_t v = 0; memcpy(&v, p, size); return v;
}
static void put_le(uint8_t *p, unsigned size, uint64_t v) { memcpy(p, &v, size); }

// `ioctl FD NAME field=value... [tail=HEX]`: the struct is built from the layout; a u64 field may
// point at a buffer: `[s:l,s:l]` (iommu_iova_range array) or `buf(N)` (N zero bytes).
static void do_ioctl(char **argv, int argc, const char *label) {
  uint64_t fd;
  if (argc < 3 || parse_num(argv[1], &fd)) { die("ioctl needs FD NAME"); return; }
  const struct layout *L = find_layout(argv[2]);
  uint8_t arg[4096 + 64]; memset(arg, 0, sizeof arg);
  struct { const struct field *f; uint8_t *buf; size_t len; } bufs[4]; int nbufs = 0;
  size_t argsz = L ? L->size : 0; int size_given = 0;
  unsigned long request = 0;
  uint64_t ptr = 0; int ptr_given = 0;
  if (!L) {
    // Raw request: `ioctl FD 0x3b99 [size=N] [ptr=ADDR]` on a zeroed buffer.
    uint64_t r; if (parse_num(argv[2], &r)) { die("unknown ioctl %s", argv[2]); return; }
    request = r; argsz = 8;
  } else {
    request = L->request;
  }
  for (int i = 3; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) { die("bad argument %s", argv[i]); return; }
    *eq = 0; const char *key = argv[i], *val = eq + 1;
    if (!strcmp(key, "tail")) {
      uint8_t tmp[64]; size_t n = parse_hex(val, tmp, sizeof tmp);
      memcpy(arg + (L ? L->size : 0), tmp, n); continue;
    }
    if (!strcmp(key, "ptr")) {
      // The argument is this address instead of the driver's buffer (NULL, process memory).
      if (parse_num(val, &ptr)) { die("bad value %s", val); return; }
      ptr_given = 1; continue;
    }
    if (!L && !strcmp(key, "size")) {
      uint64_t v; if (parse_num(val, &v)) { die("bad value %s", val); return; }
      put_le(arg, 4, v); continue;
    }
    const struct field *f = NULL;
    if (L) for (const struct field *g = L->fields; g->name; g++) if (!strcmp(g->name, key)) f = g;
    if (!f) { die("%s has no field %s", argv[2], key); return; }
    if (f->bytes) {
      if (parse_bytes(val, arg + f->off, f->size)) { die("bad value %s", val); return; }
      continue;
    }
    if (val[0] == '[' || !strncmp(val, "buf(", 4)) {
      size_t len; uint8_t *b;
      if (val[0] == '[') {
        b = calloc(64, 16); len = 0; const char *p = val + 1;
        while (*p && *p != ']') {
          char tok[128]; int n = 0; while (*p && *p != ',' && *p != ']' && n < 127) tok[n++] = *p++; tok[n] = 0;
          if (*p == ',') p++;
          char *colon = strchr(tok, ':'); uint64_t s, l;
          if (!colon) { die("range needs start:last"); return; }
          *colon = 0;
          if (parse_num(tok, &s) || parse_num(colon + 1, &l)) { die("bad range"); return; }
          put_le(b + len, 8, s); put_le(b + len + 8, 8, l); len += 16;
        }
      } else {
        len = strtoul(val + 4, NULL, 0); b = calloc(len ? len : 1, 1);
      }
      bufs[nbufs].f = f; bufs[nbufs].buf = b; bufs[nbufs].len = len; nbufs++;
      put_le(arg + f->off, 8, len ? (uint64_t)(uintptr_t)b : 0);
      continue;
    }
    uint64_t v;
    if (parse_signed_first(val, &v)) { die("bad value %s", val); return; }
    put_le(arg + f->off, f->size, v);
    if (f->off == 0 && f->size == 4) { size_given = 1; argsz = (uint32_t)v; }
  }
  if (L && !size_given) put_le(arg, 4, L->size);
  (void)argsz;
  int r = ioctl((int)fd, request, ptr_given ? (void *)(uintptr_t)ptr : (void *)arg);
  int e = errno;
  begin("ioctl"); printf(",\"cmd\":\"%s\"", argv[2]);
  if (L && !ptr_given) {
    printf(",\"out\":{"); int first = 1;
    for (const struct field *g = L->fields; g->name; g++) {
      if (!g->out) continue;
      if (g->bytes) {
        printf("%s\"%s\":\"", first ? "" : ",", g->name); first = 0;
        print_hex(arg + g->off, g->size); printf("\""); continue;
      }
      uint64_t v = get_le(arg + g->off, g->size);
      printf("%s\"%s\":\"0x%llx\"", first ? "" : ",", g->name, (unsigned long long)v); first = 0;
      if (label) { char k[64]; snprintf(k, sizeof k, "%s.%s", label, g->name); set_var(k, v); }
    }
    for (int i = 0; i < nbufs; i++) {
      printf("%s\"%s\":\"", first ? "" : ",", bufs[i].f->name); first = 0;
      print_hex(bufs[i].buf, bufs[i].len); printf("\"");
    }
    printf("}");
  }
  for (int i = 0; i < nbufs; i++) free(bufs[i].buf);
  if (r < 0) end_err(e); else { if (label) set_var(label, r); end_ok(r); }
}

static struct edu *edu_for(int fd) {
  for (int i = 0; i < n_edus; i++) if (edus[i].fd == fd) return &edus[i];
  struct vfio_region_info ri = { .argsz = sizeof ri, .index = VFIO_PCI_BAR0_REGION_INDEX };
  if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri)) return NULL;
  void *bar = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, ri.offset);
  if (bar == MAP_FAILED) return NULL;
  struct vfio_region_info ci = { .argsz = sizeof ci, .index = VFIO_PCI_CONFIG_REGION_INDEX };
  if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ci)) return NULL;
  uint16_t cmd;
  if (pread(fd, &cmd, 2, ci.offset + 4) != 2) return NULL;
  cmd |= 0x6; /* memory space + bus master */
  if (pwrite(fd, &cmd, 2, ci.offset + 4) != 2) return NULL;
  edus[n_edus].fd = fd; edus[n_edus].bar = bar; edus[n_edus].bar_len = ri.size;
  return &edus[n_edus++];
}

// `dma_to_dev DEV IOVA LEN [OFF]` / `dma_from_dev DEV IOVA LEN [OFF]`: the edu engine copies
// between IOVA and its buffer at OFF (to_dev reads memory, from_dev writes it).
static void do_dma(char **argv, int argc, int to_mem) {
  uint64_t fd, iova, len, off = 0;
  if (argc < 4 || parse_num(argv[1], &fd) || parse_num(argv[2], &iova) || parse_num(argv[3], &len) ||
      (argc > 4 && parse_num(argv[4], &off)) || len == 0 || len > EDU_MAX || off + len > 4096) {
    die("dma needs DEV IOVA LEN<=2048 [OFF]"); return;
  }
  struct edu *d = edu_for((int)fd);
  begin(argv[0]);
  if (!d) { end_err(errno); return; }
  volatile uint64_t *reg = (volatile uint64_t *)(d->bar + 0x80);
  reg[0] = to_mem ? EDU_BUF + off : iova; /* 0x80 src */
  reg[1] = to_mem ? iova : EDU_BUF + off; /* 0x88 dst */
  reg[2] = len;                           /* 0x90 count */
  reg[3] = to_mem ? 3 : 1;                /* 0x98 cmd: start, direction */
  while (reg[3] & 1) usleep(1000);
  end_ok(0);
}

// `dmar_faults`: the DMAR fault lines the kernel logged since the last call (the kernel
// ratelimits them: at most five faults per five seconds are printed).
static void do_faults(void) {
  char line[1024]; int first = 1;
  begin("dmar_faults"); printf(",\"faults\":[");
  for (int tries = 0; tries < 20; tries++) {
    ssize_t n;
    int got = 0;
    while ((n = read(kmsg_fd, line, sizeof line - 1)) > 0) {
      line[n] = 0;
      char *r = strstr(line, "[fault reason ");
      if (!r) continue;
      char *a = strstr(line, "fault addr ");
      int write = strstr(line, "DMA Write") != NULL;
      unsigned long long addr = a ? strtoull(a + 11, NULL, 16) : 0;
      unsigned reason = strtoul(r + 14, NULL, 16);
      printf("%s{\"write\":%s,\"addr\":\"0x%llx\",\"reason\":%u}", first ? "" : ",", write ? "true" : "false", addr, reason);
      first = 0; got = 1;
    }
    if (got) break;
    usleep(5000);
  }
  printf("]}\n");
}

// `kexec`: kexec_file_load of the running kernel (/boot/bzImage) with the initramfs it booted with
// (/sys/firmware/initrd, kept by retain_initrd: the lab's plus the runner's appended cpio) and the
// running command line plus oracle_resume=FILE:SEQUENCE:STEP, then reboot(LINUX_REBOOT_CMD_KEXEC).
// The next kernel's init runs seqrun -r, which prints this step's answer and goes on from the next
// step in a fresh process. Only a failed kexec_file_load or reboot answers here.
static int split(char *line, char **argv, int max);

static int copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC), out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  static char buf[1 << 16]; ssize_t n = -1;
  if (in >= 0 && out >= 0)
    while ((n = read(in, buf, sizeof buf)) > 0) if (write(out, buf, n) != n) { n = -1; break; }
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  return n == 0 ? 0 : -1;
}

static void do_kexec(void) {
  char now[2048] = "", next[4096] = "";
  int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, now, sizeof now - 1) : -1;
  if (fd >= 0) close(fd);
  if (n <= 0) { die("kexec: cannot read /proc/cmdline"); return; }
  now[n] = 0;
  if (strchr(seq_name, ' ') || strchr(seq_name, ':')) { die("kexec: the sequence name must not hold a space or a colon"); return; }
  char *words[128]; int nw = split(now, words, 128);
  size_t len = 0;
  for (int i = 0; i < nw; i++) {
    if (!strncmp(words[i], "oracle_resume=", 14)) continue;
    len += snprintf(next + len, sizeof next - len, "%s ", words[i]);
  }
  snprintf(next + len, sizeof next - len, "oracle_resume=%s:%s:%d", cur_file, seq_name, step);
  if (copy_file("/sys/firmware/initrd", "/run/oracle-initrd")) { die("kexec: no /sys/firmware/initrd (boot with retain_initrd)"); return; }
  int kfd = open("/boot/bzImage", O_RDONLY | O_CLOEXEC), ifd = open("/run/oracle-initrd", O_RDONLY | O_CLOEXEC);
  if (kfd < 0 || ifd < 0) { die("kexec: no /boot/bzImage"); return; }
  long r = syscall(SYS_kexec_file_load, kfd, ifd, strlen(next) + 1, next, 0UL);
  int err = errno;
  close(kfd); close(ifd); unlink("/run/oracle-initrd");
  if (r) { begin("kexec"); end_err(err); return; }
  fflush(stdout);
  r = syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, NULL);
  err = errno;
  begin("kexec"); end_err(err);
}

static int split(char *line, char **argv, int max) {
  int n = 0;
  while (*line && n < max) {
    while (*line == ' ' || *line == '\t') line++;
    if (!*line) break;
    argv[n++] = line;
    while (*line && *line != ' ' && *line != '\t') line++;
    if (*line) *line++ = 0;
  }
  return n;
}

static void run_line(char *line) {
  char *words[64]; int argc = split(line, words, 64);
  char **argv = words;
  if (!argc) return;
  const char *label = NULL;
  size_t l0 = strlen(argv[0]);
  if (argv[0][l0 - 1] == ':') { argv[0][l0 - 1] = 0; label = argv[0]; argv++; argc--; if (!argc) return; }
  const char *op = argv[0];
  uint64_t a, b, c, d, e;
  if (!strcmp(op, "open")) {
    uint64_t flags = O_RDWR;
    if (argc < 2 || (argc > 2 && parse_num(argv[2], &flags))) { die("open needs PATH"); return; }
    int fd = open(argv[1], (int)flags | O_CLOEXEC, 0600); int err = errno;
    begin("open"); if (fd < 0) end_err(err); else { track_fd(fd); if (label) set_var(label, fd); end_str("ret", "fd"); }
  } else if (!strcmp(op, "close")) {
    if (argc < 2 || parse_num(argv[1], &a)) { die("close needs FD"); return; }
    for (int i = 0; i < n_edus; i++) if (edus[i].fd == (int)a) edu_forget(i);
    int r = close((int)a); int err = errno;
    for (int i = 0; i < n_open; i++) if (open_fds[i] == (int)a) open_fds[i] = open_fds[--n_open];
    begin("close"); if (r) end_err(err); else end_ok(0);
  } else if (!strcmp(op, "reopen")) {
    // reopen FD FLAGS: open("/proc/self/fd/FD", FLAGS), a new open file of the same inode.
    if (argc < 3 || parse_num(argv[1], &a) || parse_num(argv[2], &b)) { die("reopen needs FD FLAGS"); return; }
    char path[64]; snprintf(path, sizeof path, "/proc/self/fd/%d", (int)a);
    int fd = open(path, (int)b | O_CLOEXEC); int err = errno;
    begin("reopen"); if (fd < 0) end_err(err); else { track_fd(fd); if (label) set_var(label, fd); end_str("ret", "fd"); }
  } else if (!strcmp(op, "memfd_create")) {
    uint64_t flags = 0;
    if (argc < 2 || (argc > 2 && parse_num(argv[2], &flags))) { die("memfd_create needs NAME"); return; }
    int fd = memfd_create(argv[1], (unsigned)flags); int err = errno;
    begin("memfd_create"); if (fd < 0) end_err(err); else { track_fd(fd); if (label) set_var(label, fd); end_str("ret", "fd"); }
  } else if (!strcmp(op, "ftruncate")) {
    if (argc < 3 || parse_num(argv[1], &a) || parse_num(argv[2], &b)) { die("ftruncate needs FD LEN"); return; }
    int r = ftruncate((int)a, (off_t)b); int err = errno;
    begin("ftruncate"); if (r) end_err(err); else end_ok(0);
  } else if (!strcmp(op, "add_seals")) {
    if (argc < 3 || parse_num(argv[1], &a) || parse_num(argv[2], &b)) { die("add_seals needs FD SEALS"); return; }
    int r = fcntl((int)a, F_ADD_SEALS, (int)b); int err = errno;
    begin("add_seals"); if (r) end_err(err); else end_ok(0);
  } else if (!strcmp(op, "mmap")) {
    // mmap LEN [PROT [FLAGS [FD [OFFSET [ADDR]]]]]: at ADDR with FLAGS as given, else at the
    // arena's next 2 MiB slot (MAP_FIXED_NOREPLACE).
    uint64_t addr = 0;
    b = PROT_READ | PROT_WRITE; c = MAP_PRIVATE | MAP_ANONYMOUS; d = (uint64_t)-1; e = 0;
    if (argc < 2 || parse_num(argv[1], &a) || (argc > 2 && parse_num(argv[2], &b)) ||
        (argc > 3 && parse_num(argv[3], &c)) || (argc > 4 && parse_signed_first(argv[4], &d)) ||
        (argc > 5 && parse_num(argv[5], &e)) || (argc > 6 && parse_num(argv[6], &addr))) { die("mmap needs LEN"); return; }
    uint64_t at = argc > 6 ? addr : arena_next;
    void *p = mmap((void *)at, a, (int)b, argc > 6 ? (int)c : ((int)c | MAP_FIXED_NOREPLACE), (int)d, (off_t)e);
    int err = errno;
    begin("mmap");
    if (p == MAP_FAILED) { end_err(err); return; }
    if (argc <= 6) arena_next = (at + a + ARENA_ALIGN - 1 + ARENA_ALIGN) & ~(ARENA_ALIGN - 1);
    if (n_maps < 256) { maps[n_maps].va = (uint64_t)p; maps[n_maps++].len = a; }
    if (label) set_var(label, (uint64_t)p);
    printf(",\"ret\":\"0x%llx\"}\n", (unsigned long long)(uintptr_t)p);
  } else if (!strcmp(op, "munmap")) {
    if (argc < 3 || parse_num(argv[1], &a) || parse_num(argv[2], &b)) { die("munmap needs ADDR LEN"); return; }
    int r = munmap((void *)a, b); int err = errno;
    begin("munmap"); if (r) end_err(err); else end_ok(0);
  } else if (!strcmp(op, "poke") || !strcmp(op, "peek")) {
    // The process's own stores and loads, through process_vm_{write,read}v on itself so that an
    // unmapped or protected address answers EFAULT instead of killing the driver.
    static uint8_t buf[4096];
    int poke = !strcmp(op, "poke");
    size_t n;
    if (argc < 3 || parse_num(argv[1], &a)) { die("%s needs ADDR", op); return; }
    if (poke) n = parse_hex(argv[2], buf, sizeof buf);
    else if (parse_num(argv[2], &b) || b > 4096) { die("peek needs ADDR LEN<=4096"); return; } else n = b;
    struct iovec local = { buf, n }, remote = { (void *)(uintptr_t)a, n };
    ssize_t r = poke ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0) : process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    int err = errno;
    begin(op);
    if (r != (ssize_t)n) { end_err(r < 0 ? err : EFAULT); return; }
    if (poke) end_ok(0);
    else { printf(",\"bytes\":\""); print_hex(buf, n); printf("\"}\n"); }
  } else if (!strcmp(op, "pipe")) {
    // `[label:] pipe`: $label is the read end, $label.w the write end.
    int p[2]; int r = pipe2(p, O_CLOEXEC); int err = errno;
    begin("pipe");
    if (r) { end_err(err); return; }
    track_fd(p[0]); track_fd(p[1]);
    if (label) { char k[64]; set_var(label, p[0]); snprintf(k, sizeof k, "%s.w", label); set_var(k, p[1]); }
    end_str("ret", "fd");
  } else if (!strcmp(op, "kexec")) {
    do_kexec();
  } else if (!strcmp(op, "sleep")) {
    // sleep MS: guest time passes (the kernel's DMAR fault ratelimit window); nothing else.
    if (argc < 2 || parse_num(argv[1], &a)) { die("sleep needs MS"); return; }
    usleep((useconds_t)(a * 1000));
    begin("sleep"); end_ok(0);
  } else if (!strcmp(op, "read")) {
    // read FD LEN: prints the bytes read (an event queue's records).
    static uint8_t buf[4096];
    if (argc < 3 || parse_num(argv[1], &a) || parse_num(argv[2], &b) || b > sizeof buf) { die("read needs FD LEN<=4096"); return; }
    ssize_t r = read((int)a, buf, b); int err = errno;
    begin("read");
    if (r < 0) { end_err(err); return; }
    printf(",\"ret\":%zd,\"bytes\":\"", r); print_hex(buf, r); printf("\"}\n");
  } else if (!strcmp(op, "write")) {
    // write FD HEX: prints the bytes written (responses to an event queue).
    static uint8_t buf[4096];
    if (argc < 2 || parse_num(argv[1], &a)) { die("write needs FD [HEX]"); return; }
    size_t n = argc > 2 ? parse_hex(argv[2], buf, sizeof buf) : 0;
    ssize_t r = write((int)a, buf, n); int err = errno;
    begin("write");
    if (r < 0) end_err(err); else end_ok(r);
  } else if (!strcmp(op, "ioctl")) {
    do_ioctl(argv, argc, label);
  } else if (!strcmp(op, "dma_to_dev")) {
    do_dma(argv, argc, 0);
  } else if (!strcmp(op, "dma_from_dev")) {
    do_dma(argv, argc, 1);
  } else if (!strcmp(op, "dmar_faults")) {
    do_faults();
  } else {
    die("unknown op %s", op);
  }
}

static void run_file(const char *path) {
  // The sequence file stays open while it runs: above the fds the sequences see.
  int fd0 = open(path, O_RDONLY | O_CLOEXEC), fd = fd0 >= 0 ? fcntl(fd0, F_DUPFD_CLOEXEC, 201) : -1;
  if (fd0 >= 0) close(fd0);
  FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
  if (!f) { printf("@@ {\"error\":\"cannot open %s\"}\n", path); return; }
  seq_file_fd = fileno(f);
  const char *base = strrchr(path, '/');
  snprintf(cur_file, sizeof cur_file, "%s", base ? base + 1 : path);
  // Resuming after a kexec: this file's sequences before the one that kexec'd are skipped, and
  // its steps before the kexec step.
  int resuming = resume_seq && !strcmp(cur_file, resume_file);
  static char name[256];
  char line[8192];
  int in_seq = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    char *p = line; while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '#') continue;
    if (p[0] == '=' && p[1] == '=') {
      if (in_seq) { printf("@@ {\"seq\":\"%s\",\"end\":true}\n", seq_name); reset_state(); }
      p += 2; while (*p == ' ') p++;
      snprintf(name, sizeof name, "%s", p); seq_name = name; in_seq = 1; step = 0;
      if (resuming && strcmp(name, resume_seq)) in_seq = 0;
      continue;
    }
    if (!in_seq) continue;
    if (resuming) {
      if (step == resume_step) {
        begin("kexec"); end_ok(0);
        resuming = 0; resume_seq = NULL;
      }
      step++;
      continue;
    }
    run_line(p); step++;
    fflush(stdout);
  }
  if (in_seq) { printf("@@ {\"seq\":\"%s\",\"end\":true}\n", seq_name); reset_state(); }
  if (resuming) printf("@@ {\"error\":\"resume: no step %d of %s in %s\"}\n", resume_step, resume_seq, cur_file);
  fclose(f);
  seq_file_fd = -1;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  kmsg_fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
  if (kmsg_fd >= 0) {
    // Out of the way: a sequence's fds start at 3, as in the simulated process (fd numbers an
    // ioctl returns, e.g. out_fault_fd, are compared).
    int high = fcntl(kmsg_fd, F_DUPFD_CLOEXEC, 200);
    if (high >= 0) { close(kmsg_fd); kmsg_fd = high; }
    lseek(kmsg_fd, 0, SEEK_END);
  }
  arena_next = ARENA_BASE;
  static char spec[512];
  if (argc > 2 && !strcmp(argv[1], "-r")) {
    // FILE:SEQUENCE:STEP (the file and the step hold no colon).
    snprintf(spec, sizeof spec, "%s", argv[2]);
    char *a = strchr(spec, ':'), *b = strrchr(spec, ':');
    if (!a || a == b) { printf("@@ {\"error\":\"bad resume %s\"}\n", argv[2]); return 1; }
    *a = 0; *b = 0;
    resume_file = spec; resume_seq = a + 1; resume_step = atoi(b + 1);
    argv += 2; argc -= 2;
  }
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      DIR *d = opendir(argv[i]); struct dirent *e; char *names[4096]; int n = 0;
      while ((e = readdir(d)) && n < 4096) if (strstr(e->d_name, ".seq")) names[n++] = strdup(e->d_name);
      closedir(d);
      qsort(names, n, sizeof *names, cmp);
      for (int k = 0; k < n; k++) {
        char p[1024]; snprintf(p, sizeof p, "%s/%s", argv[i], names[k]);
        // After a kexec, the files before the one that kexec'd ran in the previous kernel.
        if (!resume_seq || strcmp(names[k], resume_file) >= 0) run_file(p);
        free(names[k]);
      }
    } else {
      run_file(argv[i]);
    }
  }
  printf("@@ {\"done\":true}\n");
  return 0;
}
