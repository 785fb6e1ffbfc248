/* fdt-check: runs libfdt's fdt_check_full on each file given and prints one line per file,
 * "OK" or the libfdt error name (FDT_ERR_TRUNCATED, ...). Exits 1 if any file failed, 2 on
 * I/O errors. Used by __test__/fdt-tools.ts:  cc -O2 tools/fdt-check.c -lfdt -o <tmp>
 */
#include <libfdt.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const names[] = {
	"OK", "FDT_ERR_NOTFOUND", "FDT_ERR_EXISTS", "FDT_ERR_NOSPACE", "FDT_ERR_BADOFFSET",
	"FDT_ERR_BADPATH", "FDT_ERR_BADPHANDLE", "FDT_ERR_BADSTATE", "FDT_ERR_TRUNCATED",
	"FDT_ERR_BADMAGIC", "FDT_ERR_BADVERSION", "FDT_ERR_BADSTRUCTURE", "FDT_ERR_BADLAYOUT",
	"FDT_ERR_INTERNAL", "FDT_ERR_BADNCELLS", "FDT_ERR_BADVALUE", "FDT_ERR_BADOVERLAY",
	"FDT_ERR_NOPHANDLES", "FDT_ERR_BADFLAGS", "FDT_ERR_ALIGNMENT",
};

int main(int argc, char **argv)
{
	int status = 0;
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) { perror(argv[i]); return 2; }
		size_t cap = 1 << 16, len = 0, n;
		char *buf = malloc(cap); /* malloc: 8-byte aligned, as libfdt wants */
		while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
			len += n;
			if (len == cap) buf = realloc(buf, cap *= 2);
		}
		fclose(f);
		if (!buf) { fputs("out of memory\n", stderr); return 2; }
		int err = fdt_check_full(buf, len);
		int e = -err;
		if (err == 0)
			puts("OK");
		else if (e > 0 && e < (int)(sizeof(names) / sizeof(names[0])))
			puts(names[e]), status = 1;
		else
			printf("FDT_ERR_%d\n", e), status = 1;
		free(buf);
	}
	return status;
}
