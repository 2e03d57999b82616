/*
 *  net/toa/toa.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The sample's TOA module. Like the real one it hooks
 *  inet_stream_ops.getname and ipv4_specific.syn_recv_sock, and looks for
 *  the TCP option whose kind is TCPOPT_TOA (net/toa/toa.h) and whose length
 *  is TCPOLEN_TOA: kind, length, port, IPv4 address.
 *
 *  The option code the module was compiled with is also recorded in the
 *  module information ("tcpopt_toa=254"), so that `modinfo -F tcpopt_toa`
 *  shows which code reached the binary.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/stringify.h>
#include <net/sock.h>
#include "toa.h"

#define TCPOPT_EOL	0
#define TCPOPT_NOP	1

static int (*inet_getname_orig)(struct socket *, struct sockaddr *, int *, int);
static struct sock *(*syn_recv_sock_orig)(struct sock *, struct sk_buff *,
					  struct request_sock *, struct dst_entry *);

/* Find the TOA option in the TCP options at ptr (length bytes). */
int get_toa_data(const unsigned char *ptr, int length, struct toa_data *out);
int get_toa_data(const unsigned char *ptr, int length, struct toa_data *out)
{
	while (length > 0) {
		int opcode = *ptr++;
		int opsize;

		switch (opcode) {
		case TCPOPT_EOL:
			return 0;
		case TCPOPT_NOP:
			length--;
			continue;
		default:
			opsize = *ptr++;
			if (opsize < 2 || opsize > length)
				return 0;
			if (opcode == TCPOPT_TOA && opsize == TCPOLEN_TOA) {
				memcpy(out, ptr - 2, sizeof(*out));
				return 1;
			}
			ptr += opsize - 2;
			length -= opsize;
		}
	}
	return 0;
}

static int inet_getname_toa(struct socket *sock, struct sockaddr *uaddr, int *uaddr_len, int peer)
{
	return inet_getname_orig(sock, uaddr, uaddr_len, peer);
}

static struct sock *tcp_v4_syn_recv_sock_toa(struct sock *sk, struct sk_buff *skb,
					     struct request_sock *req, struct dst_entry *dst)
{
	return syn_recv_sock_orig(sk, skb, req, dst);
}

static int __init toa_init(void)
{
	inet_getname_orig = inet_stream_ops.getname;
	inet_stream_ops.getname = inet_getname_toa;
	syn_recv_sock_orig = ipv4_specific.syn_recv_sock;
	ipv4_specific.syn_recv_sock = tcp_v4_syn_recv_sock_toa;
	printk(KERN_INFO "TOA: toa loaded\n");
	return 0;
}

static void __exit toa_exit(void)
{
	inet_stream_ops.getname = inet_getname_orig;
	ipv4_specific.syn_recv_sock = syn_recv_sock_orig;
	printk(KERN_INFO "TOA: toa unloaded\n");
}

module_init(toa_init);
module_exit(toa_exit);

MODULE_DESCRIPTION("TCP option address (TOA): the client address behind a full-NAT load balancer");
MODULE_AUTHOR("toa-kernel sample tree");
MODULE_LICENSE("GPL");
MODULE_INFO(tcpopt_toa, __stringify(TCPOPT_TOA));
