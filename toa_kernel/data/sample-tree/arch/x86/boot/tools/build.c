/*
 *  arch/x86/boot/tools/build.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  Usage: build setup.bin system.bin [rootdev] > image
 *
 *  Writes the boot image: the setup part padded to whole sectors (at least
 *  SETUP_SECT_MIN), with setup_sects, root_dev and syssize filled in, then
 *  the system part. rootdev is CURRENT (the device of /), FLOPPY or empty.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define SETUP_SECT_MIN	5
#define SETUP_SECT_MAX	64
#define DEFAULT_MAJOR_ROOT 0
#define DEFAULT_MINOR_ROOT 0

static unsigned char buf[SETUP_SECT_MAX * 512];

static void die(const char *msg, const char *arg)
{
	fprintf(stderr, msg, arg);
	fputc('\n', stderr);
	exit(1);
}

static void put16(unsigned char *p, unsigned int v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
}

static void put32(unsigned char *p, unsigned long v)
{
	put16(p, v & 0xffff);
	put16(p + 2, (v >> 16) & 0xffff);
}

int main(int argc, char **argv)
{
	unsigned int major_root = DEFAULT_MAJOR_ROOT, minor_root = DEFAULT_MINOR_ROOT;
	size_t c, setup_sectors, sys_size = 0, n;
	char chunk[65536];
	struct stat sb;
	FILE *file;

	if (argc == 4) {
		if (!strcmp(argv[3], "CURRENT")) {
			if (stat("/", &sb))
				die("Couldn't stat /", "");
			major_root = major(sb.st_dev);
			minor_root = minor(sb.st_dev);
		} else if (strcmp(argv[3], "FLOPPY")) {
			if (stat(argv[3], &sb))
				die("Couldn't stat root device %s", argv[3]);
			major_root = major(sb.st_rdev);
			minor_root = minor(sb.st_rdev);
		}
	} else if (argc != 3) {
		die("Usage: build setup system [rootdev] [> image]", "");
	}
	fprintf(stderr, "Root device is (%u, %u)\n", major_root, minor_root);

	/* Copy the setup code */
	file = fopen(argv[1], "rb");
	if (!file)
		die("Unable to open `%s'", argv[1]);
	c = fread(buf, 1, sizeof(buf), file);
	if (ferror(file))
		die("read-error on `setup'", "");
	if (c < 1024)
		die("The setup must be at least 1024 bytes", "");
	if (buf[510] != 0x55 || buf[511] != 0xaa)
		die("Boot block hasn't got boot flag (0xAA55)", "");
	fclose(file);

	/* Pad unused space with zeros */
	setup_sectors = (c + 511) / 512;
	if (setup_sectors < SETUP_SECT_MIN)
		setup_sectors = SETUP_SECT_MIN;
	memset(buf + c, 0, setup_sectors * 512 - c);

	/* Set the default root device */
	put16(&buf[508], (major_root << 8) | minor_root);

	fprintf(stderr, "Setup is %zu bytes (padded to %zu bytes).\n", c, setup_sectors * 512);

	/* Open and stat the system file */
	file = fopen(argv[2], "rb");
	if (!file)
		die("Unable to open `%s'", argv[2]);
	if (fstat(fileno(file), &sb))
		die("Unable to stat `%s'", argv[2]);
	sys_size = (sb.st_size + 15) / 16;
	fprintf(stderr, "System is %lld kB\n", (long long)(sb.st_size + 1023) / 1024);

	/* Patch the setup code with the appropriate size parameters */
	buf[0x1f1] = setup_sectors - 1;
	put32(&buf[0x1f4], sys_size);

	if (fwrite(buf, 1, setup_sectors * 512, stdout) != setup_sectors * 512)
		die("Writing setup failed", "");

	/* Copy the kernel code */
	while ((n = fread(chunk, 1, sizeof(chunk), file)) > 0)
		if (fwrite(chunk, 1, n, stdout) != n)
			die("Writing system failed", "");
	fclose(file);
	if (fclose(stdout))
		die("Writing the image failed", "");
	return 0;
}
