/*
 *  init/main.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The sample's start_kernel: prints the banner and runs the initcalls of
 *  the built-in code. It is compiled and linked like a kernel's, never run.
 */
#include <linux/kernel.h>
#include <linux/init.h>

extern const char linux_banner[];
extern initcall_t __initcall_start[], __initcall_end[];
void setup_arch(char **cmdline_p);

static char *cmdline;

static void __init run_initcalls(void)
{
	initcall_t *call;
	int ret;

	for (call = __initcall_start; call < __initcall_end; call++) {
		ret = (*call)();
		if (ret)
			printk(KERN_WARNING "initcall %p returned %d\n", *call, ret);
	}
}

void __init start_kernel(void)
{
	printk("%s", linux_banner);
	setup_arch(&cmdline);
	printk("Kernel command line: %s\n", cmdline);
	run_initcalls();
	for (;;)
		;
}
