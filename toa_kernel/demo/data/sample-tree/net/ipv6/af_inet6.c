/*
 *  net/ipv6/af_inet6.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  Built into vmlinux with CONFIG_IPV6=y, or as the ipv6.ko module with
 *  CONFIG_IPV6=m.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <net/sock.h>

MODULE_AUTHOR("Cast of dozens");
MODULE_DESCRIPTION("IPv6 protocol stack for Linux");
MODULE_LICENSE("GPL");

int addrconf_init(void);

static int __init inet6_init(void)
{
	int err = sock_register_family(10);

	if (err)
		return err;
	return addrconf_init();
}
module_init(inet6_init);

static void __exit inet6_exit(void)
{
	printk(KERN_INFO "IPv6 over IPv4 tunneling driver unloaded\n");
}
module_exit(inet6_exit);
