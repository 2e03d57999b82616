/*
 *  kernel/printk.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  A minimal printk writing into a log buffer; exported so that modules
 *  link against it as they link against a kernel's.
 */
#include <linux/kernel.h>
#include <linux/module.h>

#define LOG_BUF_LEN 4096

static char __log_buf[LOG_BUF_LEN];
static unsigned long log_end;

static void emit(char c)
{
	__log_buf[log_end++ & (LOG_BUF_LEN - 1)] = c;
}

static void emit_number(unsigned long value, unsigned int base)
{
	char digits[24];
	int n = 0;

	do {
		digits[n++] = "0123456789abcdef"[value % base];
		value /= base;
	} while (value);
	while (n)
		emit(digits[--n]);
}

int vprintk(const char *fmt, va_list args)
{
	unsigned long start = log_end;
	const char *s;
	long v;

	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			emit(*fmt);
			continue;
		}
		switch (*++fmt) {
		case 's':
			for (s = va_arg(args, const char *); s && *s; s++)
				emit(*s);
			break;
		case 'd':
			v = va_arg(args, int);
			if (v < 0) {
				emit('-');
				v = -v;
			}
			emit_number(v, 10);
			break;
		case 'u':
			emit_number(va_arg(args, unsigned int), 10);
			break;
		case 'x':
			emit_number(va_arg(args, unsigned int), 16);
			break;
		case 'p':
			emit_number((unsigned long)va_arg(args, void *), 16);
			break;
		case '%':
			emit('%');
			break;
		case 0:
			return log_end - start;
		default:
			emit('%');
			emit(*fmt);
		}
	}
	return log_end - start;
}

int printk(const char *fmt, ...)
{
	va_list args;
	int r;

	va_start(args, fmt);
	r = vprintk(fmt, args);
	va_end(args);
	return r;
}
EXPORT_SYMBOL(printk);
EXPORT_SYMBOL(vprintk);
