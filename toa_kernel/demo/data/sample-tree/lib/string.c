/*
 *  lib/string.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The compiler may emit calls to these even in freestanding code.
 */
#include <linux/kernel.h>
#include <linux/module.h>

void *memcpy(void *dest, const void *src, size_t count)
{
	char *d = dest;
	const char *s = src;

	while (count--)
		*d++ = *s++;
	return dest;
}
EXPORT_SYMBOL(memcpy);

void *memset(void *s, int c, size_t count)
{
	char *p = s;

	while (count--)
		*p++ = c;
	return s;
}
EXPORT_SYMBOL(memset);

size_t strlen(const char *s)
{
	const char *sc;

	for (sc = s; *sc != '\0'; ++sc)
		/* nothing */;
	return sc - s;
}
EXPORT_SYMBOL(strlen);
