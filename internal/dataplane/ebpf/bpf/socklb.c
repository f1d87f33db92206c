// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Socket-level Service load balancing: cgroup/connect4 and cgroup/connect6 rewrite a
// connect() to a Service frontend (address, port, protocol) to one of its endpoints,
// chosen at random, before any packet exists. The maps are written by the Go Proxier
// (internal/dataplane/ebpf) from the model's chosen endpoints; nothing here decides
// which endpoints a Service has.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define ECONNREFUSED 111
#define EPERM 1

// Verdicts, as model.Verdict.
#define VERDICT_FORWARD 0
#define VERDICT_REJECT 1
#define VERDICT_DROP 2

// A frontend. addr is the IPv6 address, or the IPv4-mapped form (::ffff:a.b.c.d) of an
// IPv4 one; port is in network byte order.
struct svc_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

// count slots of the backends array starting at offset; count 0 means verdict applies.
struct svc_value {
	__u32 count;
	__u32 offset;
	__u32 verdict;
};

// An endpoint: address as in svc_key, port in network byte order.
struct backend {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 262144);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

// A rewritten connect: the frontend the application asked for and the endpoint it got.
struct peer {
	struct backend frontend;
	struct backend endpoint;
};

// The rewritten connects by socket cookie, so that getpeername() reports the Service
// address the application connected to. LRU: entries of closed sockets are evicted
// when room is needed; cookies are never reused.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct peer);
} peers SEC(".maps");

static __always_inline void remember(void *ctx, struct svc_key *key, struct backend *be)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct peer p = {};

	__builtin_memcpy(p.frontend.addr, key->addr, 16);
	p.frontend.port = key->port;
	__builtin_memcpy(p.endpoint.addr, be->addr, 16);
	p.endpoint.port = be->port;
	bpf_map_update_elem(&peers, &cookie, &p, BPF_ANY);
}

// pick looks the frontend up and returns the endpoint to connect to; NULL with *reject
// set to the errno when the frontend has no endpoint, NULL with *reject 0 when the
// address is not a frontend.
static __always_inline struct backend *pick(struct svc_key *key, int *reject)
{
	struct svc_value *svc;
	__u32 slot;

	*reject = 0;
	svc = bpf_map_lookup_elem(&services, key);
	if (!svc)
		return NULL;
	if (svc->count == 0) {
		*reject = svc->verdict == VERDICT_DROP ? EPERM : ECONNREFUSED;
		return NULL;
	}
	slot = svc->offset + bpf_get_prandom_u32() % svc->count;
	return bpf_map_lookup_elem(&backends, &slot);
}

static __always_inline int handled(__u32 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

SEC("cgroup/connect4")
int weir_connect4(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct backend *be;
	__u32 addr;
	int reject;

	if (!handled(ctx->protocol))
		return 1;
	addr = ctx->user_ip4;
	key.addr[10] = 0xff;
	key.addr[11] = 0xff;
	__builtin_memcpy(&key.addr[12], &addr, 4);
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;

	be = pick(&key, &reject);
	if (!be) {
		if (reject) {
			bpf_set_retval(-reject);
			return 0;
		}
		return 1;
	}
	__builtin_memcpy(&addr, &be->addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)be->port;
	remember(ctx, &key, be);
	return 1;
}

SEC("cgroup/connect6")
int weir_connect6(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct backend *be;
	__u32 w[4];
	int reject;

	if (!handled(ctx->protocol))
		return 1;
	// user_ip6 is read and written one 32-bit word at a time.
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(key.addr, w, 16);
	key.port = (__u16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;

	be = pick(&key, &reject);
	if (!be) {
		if (reject) {
			bpf_set_retval(-reject);
			return 0;
		}
		return 1;
	}
	// An IPv4-mapped destination of a dual-stack socket matches an IPv4 frontend and
	// gets the IPv4-mapped form of its IPv4 endpoint.
	__builtin_memcpy(w, be->addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = (__u32)be->port;
	remember(ctx, &key, be);
	return 1;
}

// getpeername() of a socket connect4/6 rewrote reports the frontend, as long as the
// socket is still connected to the endpoint it was given.
SEC("cgroup/getpeername4")
int weir_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct peer *p = bpf_map_lookup_elem(&peers, &cookie);
	__u32 addr;

	if (!p)
		return 1;
	__builtin_memcpy(&addr, &p->endpoint.addr[12], 4);
	if (ctx->user_ip4 != addr || (__u16)ctx->user_port != p->endpoint.port)
		return 1;
	__builtin_memcpy(&addr, &p->frontend.addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)p->frontend.port;
	return 1;
}

SEC("cgroup/getpeername6")
int weir_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct peer *p = bpf_map_lookup_elem(&peers, &cookie);
	__u32 w[4];

	if (!p)
		return 1;
	__builtin_memcpy(w, p->endpoint.addr, 16);
	if (ctx->user_ip6[0] != w[0] || ctx->user_ip6[1] != w[1] || ctx->user_ip6[2] != w[2] ||
	    ctx->user_ip6[3] != w[3] || (__u16)ctx->user_port != p->endpoint.port)
		return 1;
	__builtin_memcpy(w, p->frontend.addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = (__u32)p->frontend.port;
	return 1;
}

// Unconnected UDP: sendmsg4/6 rewrite each datagram to a frontend like connect4/6 and
// remember (socket cookie, endpoint) -> frontend in replies; recvmsg4/6 rewrite the
// source of a datagram from that endpoint back to the frontend.
struct reply_key {
	__u64 cookie;
	struct backend endpoint;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct reply_key);
	__type(value, struct backend);
} replies SEC(".maps");

static __always_inline void remember_reply(void *ctx, struct svc_key *key, struct backend *be)
{
	struct reply_key rk = {};
	struct backend fe = {};

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.endpoint.addr, be->addr, 16);
	rk.endpoint.port = be->port;
	__builtin_memcpy(fe.addr, key->addr, 16);
	fe.port = key->port;
	bpf_map_update_elem(&replies, &rk, &fe, BPF_ANY);
}

SEC("cgroup/sendmsg4")
int weir_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct backend *be;
	__u32 addr;
	int reject;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	addr = ctx->user_ip4;
	key.addr[10] = 0xff;
	key.addr[11] = 0xff;
	__builtin_memcpy(&key.addr[12], &addr, 4);
	key.port = (__u16)ctx->user_port;
	key.proto = IPPROTO_UDP;

	be = pick(&key, &reject);
	if (!be) {
		if (reject) {
			bpf_set_retval(-reject);
			return 0;
		}
		return 1;
	}
	__builtin_memcpy(&addr, &be->addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)be->port;
	remember_reply(ctx, &key, be);
	return 1;
}

SEC("cgroup/sendmsg6")
int weir_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct backend *be;
	__u32 w[4];
	int reject;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(key.addr, w, 16);
	key.port = (__u16)ctx->user_port;
	key.proto = IPPROTO_UDP;

	be = pick(&key, &reject);
	if (!be) {
		if (reject) {
			bpf_set_retval(-reject);
			return 0;
		}
		return 1;
	}
	__builtin_memcpy(w, be->addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = (__u32)be->port;
	remember_reply(ctx, &key, be);
	return 1;
}

SEC("cgroup/recvmsg4")
int weir_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct reply_key rk = {};
	struct backend *fe;
	__u32 addr = ctx->user_ip4;

	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.endpoint.addr[10] = 0xff;
	rk.endpoint.addr[11] = 0xff;
	__builtin_memcpy(&rk.endpoint.addr[12], &addr, 4);
	rk.endpoint.port = (__u16)ctx->user_port;
	fe = bpf_map_lookup_elem(&replies, &rk);
	if (!fe)
		return 1;
	__builtin_memcpy(&addr, &fe->addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)fe->port;
	return 1;
}

SEC("cgroup/recvmsg6")
int weir_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct reply_key rk = {};
	struct backend *fe;
	__u32 w[4];

	rk.cookie = bpf_get_socket_cookie(ctx);
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(rk.endpoint.addr, w, 16);
	rk.endpoint.port = (__u16)ctx->user_port;
	fe = bpf_map_lookup_elem(&replies, &rk);
	if (!fe)
		return 1;
	__builtin_memcpy(w, fe->addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = (__u32)fe->port;
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
