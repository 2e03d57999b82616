#ifndef TOA_SAMPLE_INIT_H
#define TOA_SAMPLE_INIT_H
/* toa-kernel SAMPLE tree (not a kernel): init and exit functions.
 * Built in, module_init(f) puts a pointer to f into .initcall6.init (which
 * start_kernel walks) and module_exit(f) one into .exitcall.exit (dropped);
 * in a module they name f init_module / cleanup_module. */

#include <linux/compiler.h>

#define __init		__attribute__((__section__(".init.text")))
#define __exit		__attribute__((__section__(".exit.text"), __used__))
#define __initdata	__attribute__((__section__(".init.data")))

typedef int (*initcall_t)(void);
typedef void (*exitcall_t)(void);

#ifndef MODULE

#define module_init(f) \
	static const initcall_t __sample_init_##f __used \
		__attribute__((__section__(".initcall6.init"))) = f;
#define module_exit(f) \
	static const exitcall_t __sample_exit_##f __used \
		__attribute__((__section__(".exitcall.exit"))) = f;

#else

#define module_init(f) \
	int init_module(void) __attribute__((alias(#f)));
#define module_exit(f) \
	void cleanup_module(void) __attribute__((alias(#f)));

#endif

#endif
