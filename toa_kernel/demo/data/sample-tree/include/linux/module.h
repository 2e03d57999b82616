#ifndef TOA_SAMPLE_MODULE_H
#define TOA_SAMPLE_MODULE_H
/* toa-kernel SAMPLE tree (not a kernel): module information and exported
 * symbols, in the ELF sections modinfo, depmod and System.map read:
 *   MODULE_INFO(tag, "v")  a "tag=v" string in .modinfo (modules only)
 *   EXPORT_SYMBOL(s)       s's address and name in __ksymtab, the name in
 *                          __ksymtab_strings */

#include <linux/compiler.h>
#include <linux/stringify.h>
#include <linux/init.h>
#include <linux/kernel.h>

#define MODULE_NAME_LEN 56

struct kernel_symbol {
	unsigned long value;
	const char *name;
};

/* what scripts/mod/modpost fills in for each module (NAME.mod.c) */
struct module {
	char name[MODULE_NAME_LEN];
	int (*init)(void);
	void (*exit)(void);
};
extern struct module __this_module;

int init_module(void);
void cleanup_module(void);

#define __sample_join2(a, b)	a##b
#define __sample_join(a, b)	__sample_join2(a, b)

#ifdef MODULE
#define MODULE_INFO(tag, value) \
	static const char __sample_join(__modinfo_##tag, __LINE__)[] __used \
		__attribute__((section(".modinfo"), aligned(1))) = #tag "=" value
#else
#define MODULE_INFO(tag, value)
#endif

#define MODULE_LICENSE(text)		MODULE_INFO(license, text)
#define MODULE_AUTHOR(text)		MODULE_INFO(author, text)
#define MODULE_DESCRIPTION(text)	MODULE_INFO(description, text)
#define MODULE_VERSION(text)		MODULE_INFO(version, text)

#define __sample_export(s, table) \
	extern typeof(s) s; \
	static const char __kstrtab_##s[] \
		__attribute__((section("__ksymtab_strings"), aligned(1))) = #s; \
	static const struct kernel_symbol __ksymtab_##s __used \
		__attribute__((section(table))) = { (unsigned long)&s, __kstrtab_##s }

#define EXPORT_SYMBOL(s)	__sample_export(s, "__ksymtab")
#define EXPORT_SYMBOL_GPL(s)	__sample_export(s, "__ksymtab_gpl")

#endif
