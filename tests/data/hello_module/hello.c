// SPDX-License-Identifier: GPL-2.0
/*
 * A tiny out-of-tree module for the tests: built with Kbuild against real
 * kernel headers through the same code path as the TOA module, never loaded.
 */
#include <linux/init.h>
#include <linux/module.h>

#include "toa.h"

static int __init hello_init(void)
{
	pr_info("hello: loaded\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("toa-kernel test module");
MODULE_INFO(tcpopt_toa, __stringify(TCPOPT_TOA));
