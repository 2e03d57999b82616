#ifndef _LINUX_MODULE_H
#define _LINUX_MODULE_H
/* toa-kernel SAMPLE tree: module information and exported symbols, laid
 * out in the ELF sections the 2.6.32 kernel uses (.modinfo, __ksymtab,
 * __ksymtab_strings, .gnu.linkonce.this_module), so that modinfo, depmod
 * and System.map see them as they see a real module's. */

#include <linux/compiler.h>
#include <linux/stringify.h>
#include <linux/init.h>
#include <linux/kernel.h>

#define MODULE_NAME_LEN 56

struct kernel_symbol {
	unsigned long value;
	const char *name;
};

struct module {
	char name[MODULE_NAME_LEN];
	int (*init)(void);
	void (*exit)(void);
};

extern struct module __this_module;
#define THIS_MODULE (&__this_module)

#ifdef MODULE
#define ___module_cat(a, b) __mod_ ## a ## b
#define __module_cat(a, b) ___module_cat(a, b)
#define __MODULE_INFO(tag, name, info)					  \
static const char __module_cat(name, __LINE__)[]			  \
  __used								  \
  __attribute__((section(".modinfo"), unused, aligned(1))) = __stringify(tag) "=" info
#else  /* !MODULE */
#define __MODULE_INFO(tag, name, info)
#endif

#define MODULE_INFO(tag, info) __MODULE_INFO(tag, tag, info)
#define MODULE_LICENSE(_license) MODULE_INFO(license, _license)
#define MODULE_AUTHOR(_author) MODULE_INFO(author, _author)
#define MODULE_DESCRIPTION(_description) MODULE_INFO(description, _description)
#define MODULE_VERSION(_version) MODULE_INFO(version, _version)

extern int init_module(void);
extern void cleanup_module(void);

/* For every exported symbol, place a struct in the __ksymtab section */
#define __EXPORT_SYMBOL(sym, sec)					\
	extern typeof(sym) sym;						\
	static const char __kstrtab_##sym[]				\
	__attribute__((section("__ksymtab_strings"), aligned(1)))	\
	= #sym;								\
	static const struct kernel_symbol __ksymtab_##sym		\
	__used								\
	__attribute__((section("__ksymtab" sec), unused))		\
	= { (unsigned long)&sym, __kstrtab_##sym }

#define EXPORT_SYMBOL(sym)		__EXPORT_SYMBOL(sym, "")
#define EXPORT_SYMBOL_GPL(sym)		__EXPORT_SYMBOL(sym, "_gpl")

#endif /* _LINUX_MODULE_H */
