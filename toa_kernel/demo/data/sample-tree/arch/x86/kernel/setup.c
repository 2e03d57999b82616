/*
 *  arch/x86/kernel/setup.c (toa-kernel SAMPLE tree, not a kernel)
 */
#include <linux/kernel.h>
#include <linux/init.h>

#define COMMAND_LINE_SIZE 2048

char boot_command_line[COMMAND_LINE_SIZE] __initdata;
static char command_line[COMMAND_LINE_SIZE];

void setup_arch(char **cmdline_p);

void __init setup_arch(char **cmdline_p)
{
	memcpy(command_line, boot_command_line, COMMAND_LINE_SIZE);
	*cmdline_p = command_line;
}
