/*
 *  net/ipv4/tcp_ipv4.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  ipv4_specific.syn_recv_sock creates the socket of an accepted
 *  connection; the TOA module wraps it to keep the TOA option's address.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <net/sock.h>

struct sock *tcp_v4_syn_recv_sock(struct sock *sk, struct sk_buff *skb,
				  struct request_sock *req, struct dst_entry *dst)
{
	(void)skb;
	(void)req;
	(void)dst;
	return sk;
}
EXPORT_SYMBOL(tcp_v4_syn_recv_sock);

struct inet_connection_sock_af_ops ipv4_specific = {
	.syn_recv_sock = tcp_v4_syn_recv_sock,
};
EXPORT_SYMBOL(ipv4_specific);
