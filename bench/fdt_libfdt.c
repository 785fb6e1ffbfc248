/* Native libfdt baseline for `npm run bench` (scripts/bench.mjs compiles it with
 *   cc -O2 bench/fdt_libfdt.c -lfdt -o <tmp>
 * against Debian's libfdt-dev). It builds the same trees as crates/fdt/benches/fdt.rs with
 * libfdt's sequential-write API and times them with clock_gettime(CLOCK_MONOTONIC):
 *
 * - KHO-like tree: root { compatible = "kho-v1", preserved-memory-map = 8 B LE } plus N children
 *   `node<i>`, each { iova-start = 8 B LE, iova-len = 8 B LE, iommu-prot = 4 B LE }, for
 *   N = 1,000 and 100,000 (default name dedup), and N = 100,000 with
 *   FDT_CREATE_FLAG_NO_NAME_DEDUP (info);
 * - unique names: a root with U properties `p<i>`, 4-byte values (libfdt's dedup is quadratic
 *   in the strings block: seconds for 20,000 names, so the run count is given on the command line);
 * - fdt_check_full on the 100,000-node blob.
 *
 * Node and property names are formatted before timing, as in the Rust bench.
 * Usage: fdt_libfdt <dump-dir> <unique-names> <unique-reps> <quick 0|1>
 * Writes <dump-dir>/libfdt_1k.dtb and prints ONE JSON line with best and median ns per run.
 */
#include <libfdt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUF_SIZE (32u << 20)

static char **node_names;
static char **prop_names;

static uint64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err) {
	fprintf(stderr, "fdt_libfdt: %s: %s\n", what, fdt_strerror(err));
	exit(1);
}

#define CHECK(call)                       \
	do {                              \
		int err_ = (call);        \
		if (err_ < 0)             \
			die(#call, err_); \
	} while (0)

static void put_le64(uint8_t *p, uint64_t v) {
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le32(uint8_t *p, uint32_t v) {
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The KHO-like tree; returns totalsize. Values match crates/fdt/benches/fdt.rs. */
static int build_kho(void *buf, int bufsize, int n, uint32_t flags) {
	uint8_t v8[8], v4[4];
	CHECK(fdt_create_with_flags(buf, bufsize, flags));
	CHECK(fdt_finish_reservemap(buf));
	CHECK(fdt_begin_node(buf, ""));
	CHECK(fdt_property(buf, "compatible", "kho-v1", 7));
	put_le64(v8, 0x1234000ull);
	CHECK(fdt_property(buf, "preserved-memory-map", v8, 8));
	for (int i = 0; i < n; i++) {
		CHECK(fdt_begin_node(buf, node_names[i]));
		put_le64(v8, 0x100000000ull + (uint64_t)i * 0x10000u);
		CHECK(fdt_property(buf, "iova-start", v8, 8));
		put_le64(v8, 0x1000u * (uint64_t)(1 + (i & 15)));
		CHECK(fdt_property(buf, "iova-len", v8, 8));
		put_le32(v4, 3);
		CHECK(fdt_property(buf, "iommu-prot", v4, 4));
		CHECK(fdt_end_node(buf));
	}
	CHECK(fdt_end_node(buf));
	CHECK(fdt_finish(buf));
	return (int)fdt_totalsize(buf);
}

static int build_unique(void *buf, int bufsize, int u) {
	uint8_t v4[4];
	CHECK(fdt_create(buf, bufsize));
	CHECK(fdt_finish_reservemap(buf));
	CHECK(fdt_begin_node(buf, ""));
	for (int i = 0; i < u; i++) {
		put_le32(v4, (uint32_t)i);
		CHECK(fdt_property(buf, prop_names[i], v4, 4));
	}
	CHECK(fdt_end_node(buf));
	CHECK(fdt_finish(buf));
	return (int)fdt_totalsize(buf);
}

static int cmp_u64(const void *a, const void *b) {
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct result {
	int bytes;
	int reps;
	double best_ns, median_ns;
};

enum kind { KHO, KHO_NODEDUP, UNIQUE, CHECK_FULL };

/* fdt_create zeroes the whole buffer it is given, so each case gets a buffer of its blob's size
 * rounded up to 4 KiB (found by an untimed run), as a caller sizing it well would. */
static int fit(int bytes) {
	return (bytes + 4095) & ~4095;
}

static struct result measure(void *buf, enum kind k, int n, int reps, const void *blob) {
	uint64_t *t = malloc(sizeof(uint64_t) * (size_t)reps);
	struct result r = {0, reps, 0, 0};
	int bufsize = BUF_SIZE;
	switch (k) {
	case KHO: bufsize = fit(build_kho(buf, BUF_SIZE, n, 0)); break;
	case KHO_NODEDUP: bufsize = fit(build_kho(buf, BUF_SIZE, n, FDT_CREATE_FLAG_NO_NAME_DEDUP)); break;
	case UNIQUE: bufsize = fit(build_unique(buf, BUF_SIZE, n)); break;
	case CHECK_FULL: break;
	}
	for (int i = 0; i < reps; i++) {
		uint64_t t0 = now_ns();
		switch (k) {
		case KHO: r.bytes = build_kho(buf, bufsize, n, 0); break;
		case KHO_NODEDUP: r.bytes = build_kho(buf, bufsize, n, FDT_CREATE_FLAG_NO_NAME_DEDUP); break;
		case UNIQUE: r.bytes = build_unique(buf, bufsize, n); break;
		case CHECK_FULL: {
			int err = fdt_check_full(blob, fdt_totalsize(blob));
			if (err)
				die("fdt_check_full", err);
			r.bytes = (int)fdt_totalsize(blob);
			break;
		}
		}
		t[i] = now_ns() - t0;
	}
	qsort(t, (size_t)reps, sizeof *t, cmp_u64);
	r.best_ns = (double)t[0];
	r.median_ns = reps % 2 ? (double)t[reps / 2] : ((double)t[reps / 2 - 1] + (double)t[reps / 2]) / 2;
	free(t);
	return r;
}

static void print(const char *key, struct result r, int last) {
	printf("\"%s\":{\"bytes\":%d,\"reps\":%d,\"best_ns\":%.0f,\"median_ns\":%.0f}%s", key, r.bytes, r.reps,
	       r.best_ns, r.median_ns, last ? "" : ",");
}

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: %s <dump-dir> <unique-names> <unique-reps> <quick 0|1>\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	int unique_n = atoi(argv[2]), unique_reps = atoi(argv[3]), quick = atoi(argv[4]);
	const int big = 100000;
	/* Repetitions: about 0.1–1 s per case (quick: a fifth). */
	int reps_1k = quick ? 200 : 1000, reps_100k = quick ? 7 : 31;

	node_names = malloc(sizeof(char *) * big);
	for (int i = 0; i < big; i++) {
		char s[32];
		snprintf(s, sizeof s, "node%d", i);
		node_names[i] = strdup(s);
	}
	prop_names = malloc(sizeof(char *) * (size_t)(unique_n > 0 ? unique_n : 1));
	for (int i = 0; i < unique_n; i++) {
		char s[32];
		snprintf(s, sizeof s, "p%d", i);
		prop_names[i] = strdup(s);
	}
	/* 8-aligned (libfdt's first header check). */
	void *buf = aligned_alloc(8, BUF_SIZE);
	void *blob100k = aligned_alloc(8, BUF_SIZE);
	if (!buf || !blob100k) {
		fprintf(stderr, "fdt_libfdt: out of memory\n");
		return 1;
	}

	/* The 1k blob for the byte-identity check against ours (Layout::Libfdt). */
	int len = build_kho(buf, BUF_SIZE, 1000, 0);
	char path[4096];
	snprintf(path, sizeof path, "%s/libfdt_1k.dtb", dir);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, (size_t)len, f) != (size_t)len || fclose(f)) {
		fprintf(stderr, "fdt_libfdt: cannot write %s\n", path);
		return 1;
	}

	struct result e1k = measure(buf, KHO, 1000, reps_1k, NULL);
	struct result e100k = measure(buf, KHO, big, reps_100k, NULL);
	memcpy(blob100k, buf, (size_t)e100k.bytes);
	struct result nd100k = measure(buf, KHO_NODEDUP, big, reps_100k, NULL);
	struct result chk = measure(buf, CHECK_FULL, 0, reps_100k * 2, blob100k);
	struct result uq = {0, 0, 0, 0};
	if (unique_n > 0 && unique_reps > 0)
		uq = measure(buf, UNIQUE, unique_n, unique_reps, NULL);

	printf("{");
	print("encode_1k", e1k, 0);
	print("encode_100k", e100k, 0);
	print("encode_100k_nodedup", nd100k, 0);
	print("check_full_100k", chk, 0);
	print("unique", uq, 0);
	printf("\"unique_names\":%d}\n", unique_n);
	return 0;
}
