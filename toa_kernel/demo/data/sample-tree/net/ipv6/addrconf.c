/*
 *  net/ipv6/addrconf.c (toa-kernel SAMPLE tree, not a kernel)
 */
#include <linux/kernel.h>

int addrconf_init(void);

int addrconf_init(void)
{
#ifdef CONFIG_IPV6_PRIVACY
	printk(KERN_INFO "IPv6: privacy extensions enabled\n");
#endif
	return 0;
}
