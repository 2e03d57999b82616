/*
 * toa-kernel SAMPLE tree (not a kernel): joins the boot image.
 *
 *   build SETUP SYSTEM > IMAGE
 *
 * SETUP (the setup header, at least two sectors, boot flag at 510) is padded
 * with zeros to whole 512-byte sectors, four at least; the number of sectors
 * after the first goes to offset 0x1f1 and the size of SYSTEM in 16-byte
 * units to offset 0x1f4. SYSTEM follows as it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECTOR		512
#define MIN_SECTORS	5
#define MAX_SECTORS	64

static unsigned char setup[MAX_SECTORS * SECTOR];

static void fail(const char *what, const char *name)
{
	fprintf(stderr, "build: %s %s\n", what, name);
	exit(1);
}

static void store_le(unsigned char *at, unsigned long value, int bytes)
{
	while (bytes--) {
		*at++ = value & 0xff;
		value >>= 8;
	}
}

static long file_size(FILE *f)
{
	long size;

	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		return -1;
	return size;
}

int main(int argc, char **argv)
{
	FILE *in;
	size_t used, sectors, n;
	long system_size;
	char copy[1 << 16];

	if (argc != 3)
		fail("usage: build SETUP SYSTEM >", "IMAGE");

	in = fopen(argv[1], "rb");
	if (!in)
		fail("cannot open", argv[1]);
	used = fread(setup, 1, sizeof(setup), in);
	if (ferror(in) || used < 2 * SECTOR)
		fail("too short or unreadable:", argv[1]);
	if (setup[510] != 0x55 || setup[511] != 0xaa)
		fail("no 0xAA55 boot flag in", argv[1]);
	fclose(in);
	sectors = (used + SECTOR - 1) / SECTOR;
	if (sectors < MIN_SECTORS)
		sectors = MIN_SECTORS;

	in = fopen(argv[2], "rb");
	if (!in || (system_size = file_size(in)) < 0)
		fail("cannot read", argv[2]);

	setup[0x1f1] = sectors - 1;
	store_le(&setup[0x1f4], (system_size + 15) / 16, 4);
	fprintf(stderr, "Setup: %zu bytes in %zu sectors; system: %ld kB\n",
		used, sectors, (system_size + 1023) / 1024);

	if (fwrite(setup, SECTOR, sectors, stdout) != sectors)
		fail("cannot write", "the setup");
	while ((n = fread(copy, 1, sizeof(copy), in)) > 0)
		if (fwrite(copy, 1, n, stdout) != n)
			fail("cannot write", "the system");
	fclose(in);
	if (fclose(stdout))
		fail("cannot write", "the image");
	return 0;
}
