#ifndef _NET_SOCK_H
#define _NET_SOCK_H
/* toa-kernel SAMPLE tree: just enough of the socket layer for the sample's
 * TOA module to hook the same two functions the real module hooks. */

#include <linux/types.h>

struct sockaddr;
struct sk_buff;
struct sock;
struct socket;
struct request_sock;
struct dst_entry;

struct proto_ops {
	int (*getname)(struct socket *sock, struct sockaddr *addr, int *sockaddr_len, int peer);
};

struct inet_connection_sock_af_ops {
	struct sock *(*syn_recv_sock)(struct sock *sk, struct sk_buff *skb,
				      struct request_sock *req, struct dst_entry *dst);
};

extern struct proto_ops inet_stream_ops;
extern struct inet_connection_sock_af_ops ipv4_specific;

int inet_getname(struct socket *sock, struct sockaddr *uaddr, int *uaddr_len, int peer);
struct sock *tcp_v4_syn_recv_sock(struct sock *sk, struct sk_buff *skb,
				  struct request_sock *req, struct dst_entry *dst);
int sock_register_family(int family);

#endif /* _NET_SOCK_H */
