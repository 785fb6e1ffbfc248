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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>

struct field { const char *name; unsigned off, size; int out; };
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

static void reset_state(void) {
  while (n_edus) edu_forget(0);
  for (int i = n_open - 1; i >= 0; i--) close(open_fds[i]);
  n_open = 0;
  // And every fd a step got otherwise (an event queue's from an ioctl): the next sequence's
  // fds start at 3 again. The driver's own (kmsg, the sequence file) are at 200 and above.
  for (int fd = 3; fd < 200; fd++) close(fd);
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
  if (!L) {
    // Raw request: `ioctl FD 0x3b99 [size=N]`.
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
    const struct field *f = NULL;
    if (L) for (const struct field *g = L->fields; g->name; g++) if (!strcmp(g->name, key)) f = g;
    if (!f) { die("%s has no field %s", argv[2], key); return; }
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
  int r = ioctl((int)fd, request, arg);
  int e = errno;
  begin("ioctl"); printf(",\"cmd\":\"%s\"", argv[2]);
  if (L) {
    printf(",\"out\":{"); int first = 1;
    for (const struct field *g = L->fields; g->name; g++) {
      if (!g->out) continue;
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
    int fd = open(argv[1], (int)flags | O_CLOEXEC); int err = errno;
    begin("open"); if (fd < 0) end_err(err); else { track_fd(fd); if (label) set_var(label, fd); end_str("ret", "fd"); }
  } else if (!strcmp(op, "close")) {
    if (argc < 2 || parse_num(argv[1], &a)) { die("close needs FD"); return; }
    for (int i = 0; i < n_edus; i++) if (edus[i].fd == (int)a) edu_forget(i);
    int r = close((int)a); int err = errno;
    for (int i = 0; i < n_open; i++) if (open_fds[i] == (int)a) open_fds[i] = open_fds[--n_open];
    begin("close"); if (r) end_err(err); else end_ok(0);
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
      continue;
    }
    if (!in_seq) continue;
    run_line(p); step++;
    fflush(stdout);
  }
  if (in_seq) { printf("@@ {\"seq\":\"%s\",\"end\":true}\n", seq_name); reset_state(); }
  fclose(f);
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
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      DIR *d = opendir(argv[i]); struct dirent *e; char *names[4096]; int n = 0;
      while ((e = readdir(d)) && n < 4096) if (strstr(e->d_name, ".seq")) names[n++] = strdup(e->d_name);
      closedir(d);
      qsort(names, n, sizeof *names, cmp);
      for (int k = 0; k < n; k++) { char p[1024]; snprintf(p, sizeof p, "%s/%s", argv[i], names[k]); run_file(p); free(names[k]); }
    } else {
      run_file(argv[i]);
    }
  }
  printf("@@ {\"done\":true}\n");
  return 0;
}
