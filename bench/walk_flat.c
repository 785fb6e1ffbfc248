// The floor for the native walk: a flat C 4-level second-level walk over the same table bytes
// the criterion bench walks (translate/walk_4level, dumped with VTD_WALK_DUMP=<file>), placed at
// their physical addresses in one flat host mapping, as QEMU's vtd_iova_to_slpte reads guest RAM.
// It checks only what a walk must (present, leaf) and writes each translation, as translate_batch.
//
// cc -O2 bench/walk_flat.c -o walk_flat && ./walk_flat <dump> [rounds]
// stdout: ONE JSON object {"tablePages", "iovas", "rounds", "median_ns_per_walk"}.
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define ADDR_MASK 0x000ffffffffff000ull

static uint64_t rd(FILE *f) {
  uint64_t x;
  if (fread(&x, 8, 1, f) != 1) {
    fprintf(stderr, "walk_flat: short dump\n");
    exit(1);
  }
  return x;
}

static inline uint64_t walk(const uint8_t *base, uint64_t pgd, uint64_t iova) {
  uint64_t table = pgd;
  for (int level = 4;; level--) {
    unsigned shift = 12 + 9 * (level - 1);
    uint64_t pte = *(const uint64_t *)(base + table + 8 * ((iova >> shift) & 511));
    if (!(pte & 3)) return ~0ull;
    uint64_t addr = pte & ADDR_MASK;
    if (level == 1 || (pte & 0x80)) return addr + (iova & ((1ull << shift) - 1));
    table = addr;
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: walk_flat <dump> [rounds]\n");
    return 2;
  }
  int rounds = argc > 2 ? atoi(argv[2]) : 2000;
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  uint64_t pgd = rd(f), npages = rd(f), n = rd(f);
  // The same span as the simulated host (1 TiB), reserved, not committed.
  size_t span = (size_t)1 << 40;
  uint8_t *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  madvise(base, span, MADV_NOHUGEPAGE);
  for (uint64_t i = 0; i < npages; i++) {
    uint64_t pa = rd(f);
    if (pa + 4096 > span || fread(base + pa, 4096, 1, f) != 1) {
      fprintf(stderr, "walk_flat: bad table page\n");
      return 1;
    }
  }
  uint64_t *iova = malloc(n * 8), *want = malloc(n * 8), *out = malloc(n * 8);
  for (uint64_t i = 0; i < n; i++) iova[i] = rd(f);
  for (uint64_t i = 0; i < n; i++) want[i] = rd(f);
  fclose(f);
  double *t = malloc(rounds * sizeof(double));
  for (int r = -rounds / 10; r < rounds; r++) {  // the first tenth warms up
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < n; i++) out[i] = walk(base, pgd, iova[i]);
    __asm__ volatile("" ::"r"(out) : "memory");
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (r >= 0) t[r] = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
  }
  for (uint64_t i = 0; i < n; i++)
    if (out[i] != want[i]) {
      fprintf(stderr, "walk_flat: iova %#" PRIx64 " -> %#" PRIx64 ", want %#" PRIx64 "\n", iova[i], out[i], want[i]);
      return 1;
    }
  qsort(t, rounds, sizeof(double), cmp);
  printf("{\"tablePages\":%" PRIu64 ",\"iovas\":%" PRIu64 ",\"rounds\":%d,\"median_ns_per_walk\":%.3f}\n", npages, n, rounds, t[rounds / 2]);
  return 0;
}
