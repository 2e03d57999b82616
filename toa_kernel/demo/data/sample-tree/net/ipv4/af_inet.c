/*
 *  net/ipv4/af_inet.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  inet_stream_ops.getname is what getpeername() ends in; the TOA module
 *  replaces it to report the client address carried in the TCP option.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <net/sock.h>

int inet_getname(struct socket *sock, struct sockaddr *uaddr, int *uaddr_len, int peer)
{
	(void)sock;
	(void)uaddr;
	*uaddr_len = 16;
	return peer ? 0 : 0;
}
EXPORT_SYMBOL(inet_getname);

struct proto_ops inet_stream_ops = {
	.getname = inet_getname,
};
EXPORT_SYMBOL(inet_stream_ops);

static int __init inet_init(void)
{
	return sock_register_family(2);
}

module_init(inet_init);
