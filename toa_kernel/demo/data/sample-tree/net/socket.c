/*
 *  net/socket.c (toa-kernel SAMPLE tree, not a kernel)
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <net/sock.h>

#define NPROTO 38

static int families[NPROTO];

int sock_register_family(int family)
{
	if (family < 0 || family >= NPROTO)
		return -1;
	families[family] = 1;
	return 0;
}
EXPORT_SYMBOL(sock_register_family);

static int __init sock_init(void)
{
	printk(KERN_INFO "NET: Registered protocol family %d\n", 16);
	return 0;
}

module_init(sock_init);
