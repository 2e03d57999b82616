#ifndef _LINUX_INIT_H
#define _LINUX_INIT_H
/* toa-kernel SAMPLE tree: initcalls and module entry points. */

#include <linux/compiler.h>

#define __init		__attribute__((__section__(".init.text")))
#define __exit		__attribute__((__section__(".exit.text"), __used__))
#define __initdata	__attribute__((__section__(".init.data")))

typedef int (*initcall_t)(void);
typedef void (*exitcall_t)(void);

#ifndef MODULE

#define __define_initcall(level, fn, id) \
	static initcall_t __initcall_##fn##id __used \
	__attribute__((__section__(".initcall" level ".init"))) = fn

#define device_initcall(fn)		__define_initcall("6", fn, 6)
#define __initcall(fn) device_initcall(fn)
#define __exitcall(fn) \
	static exitcall_t __exitcall_##fn __used \
	__attribute__((__section__(".exitcall.exit"))) = fn

#define module_init(x)	__initcall(x);
#define module_exit(x)	__exitcall(x);

#else /* MODULE */

/* Each module must use one module_init(). */
#define module_init(initfn)					\
	static inline initcall_t __inittest(void)		\
	{ return initfn; }					\
	int init_module(void) __attribute__((alias(#initfn)));

/* This is only required if you want to be unloadable. */
#define module_exit(exitfn)					\
	static inline exitcall_t __exittest(void)		\
	{ return exitfn; }					\
	void cleanup_module(void) __attribute__((alias(#exitfn)));

#endif

#endif /* _LINUX_INIT_H */
