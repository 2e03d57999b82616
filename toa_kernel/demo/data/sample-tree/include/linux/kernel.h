#ifndef TOA_SAMPLE_KERNEL_H
#define TOA_SAMPLE_KERNEL_H
/* toa-kernel SAMPLE tree */

#include <stdarg.h>
#include <linux/types.h>
#include <linux/compiler.h>

#define KERN_INFO	"<6>"
#define KERN_WARNING	"<4>"
#define KERN_ERR	"<3>"

int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintk(const char *fmt, va_list args);

void *memcpy(void *dest, const void *src, size_t n);
void *memset(void *s, int c, size_t n);
size_t strlen(const char *s);

#endif
