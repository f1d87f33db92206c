// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Socket-level Service load balancing: cgroup/connect4 and cgroup/connect6 rewrite a
// connect() to a Service frontend (address, port, protocol) to one of its endpoints,
// chosen at random or by Maglev, before any packet exists. The maps are written by the Go Proxier
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

// How a frontend picks among its slots.
#define ALG_RANDOM 0
#define ALG_MAGLEV 1

// Which sockets a frontend entry is for: SCOPE_ALL for every socket (and for the
// node's own where SCOPE_POD differs), SCOPE_POD for sockets of other network
// namespaces (pods on this node), written only where their endpoint set differs.
#define SCOPE_ALL 0
#define SCOPE_POD 1

// A frontend. addr is the IPv6 address, or the IPv4-mapped form (::ffff:a.b.c.d) of an
// IPv4 one; port is in network byte order. A node port has the unspecified address
// (:: or ::ffff:0.0.0.0) and matches every address in nodeips; port 0 is every other
// port of a ClusterIP (rejected).
struct svc_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 scope;
};

// count slots of the backends array starting at offset; count 0 means verdict applies.
// affinity_timeout (seconds), when not 0, keeps a client (a network namespace) on the
// endpoint it got. ALG_MAGLEV looks the client up in maglev[maglev_offset ...
// +maglev_size), whose entries are slot numbers relative to offset.
struct svc_value {
	__u32 count;
	__u32 offset;
	__u32 verdict;
	__u32 algorithm;
	__u32 affinity_timeout;
	__u32 maglev_offset;
	__u32 maglev_size;
	__u32 pad;
	__u64 seed;
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

// Maglev lookup tables of the frontends that ask for Maglev, back to back.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1048576);
	__type(key, __u32);
	__type(value, __u32);
} maglev SEC(".maps");

// The node's addresses that serve node ports (--nodeport-addresses applied).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct backend);
	__type(value, __u8);
} nodeips SEC(".maps");

// settings[0]: the network namespace cookie of the node (the namespace weir runs in).
struct config {
	__u64 host_netns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// ClientIP session affinity: the endpoint a client (network namespace) got from a
// frontend, and when it last used it.
struct aff_key {
	__u64 netns;
	struct svc_key svc;
	__u32 pad;
};

struct aff_value {
	struct backend endpoint;
	__u64 last;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct aff_key);
	__type(value, struct aff_value);
} affinity SEC(".maps");

// The endpoints of the frontends with affinity: an affinity entry counts only while its
// endpoint is still one of the frontend's.
struct member_key {
	struct svc_key svc;
	struct backend endpoint;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct member_key);
	__type(value, __u8);
} members SEC(".maps");

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

// internal/balance's hashes (hash.go, rand.go), so that a Maglev slot here is the one
// balance.MaglevSlot computes.
#define GOLDEN 0x9e3779b97f4a7c15ULL

static __always_inline __u64 mix64(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

// below(r, n): the high 64 bits of r*n, for n < 2^32.
static __always_inline __u32 below(__u64 r, __u32 n)
{
	__u64 a = r >> 32, b = r & 0xffffffffULL;
	return (__u32)((a * n + ((b * n) >> 32)) >> 32);
}

// lookup finds the frontend for key (a copy: addr and scope are changed) as a socket of
// network namespace netns sees it: the pods' own entry first, then the one for all;
// then, for an address of the node, the node port; then the ClusterIP's other ports.
static __always_inline struct svc_value *lookup(struct svc_key *key, int pod)
{
	struct svc_value *svc;
	struct backend node = {};
	__u16 port = key->port;

	if (pod) {
		key->scope = SCOPE_POD;
		svc = bpf_map_lookup_elem(&services, key);
		if (svc)
			return svc;
	}
	key->scope = SCOPE_ALL;
	svc = bpf_map_lookup_elem(&services, key);
	if (svc)
		return svc;
	__builtin_memcpy(node.addr, key->addr, 16);
	if (bpf_map_lookup_elem(&nodeips, &node)) {
		int v4 = key->addr[10] == 0xff && key->addr[11] == 0xff;

		__builtin_memset(key->addr, 0, 16);
		if (v4) {
			key->addr[10] = 0xff;
			key->addr[11] = 0xff;
		}
		if (pod) {
			key->scope = SCOPE_POD;
			svc = bpf_map_lookup_elem(&services, key);
			if (svc)
				return svc;
		}
		key->scope = SCOPE_ALL;
		return bpf_map_lookup_elem(&services, key);
	}
	key->port = 0;
	svc = bpf_map_lookup_elem(&services, key);
	key->port = port;
	return svc;
}

// pick finds the frontend of key and writes the endpoint to connect to in *out: 1; 0
// when the address is not a frontend; a negative errno when the frontend has no
// endpoint for this client.
static __always_inline int pick(struct bpf_sock_addr *ctx, struct svc_key *orig, struct backend *out)
{
	struct svc_key key = *orig;
	struct config *cfg;
	struct svc_value *svc;
	struct backend *be;
	__u64 netns = 0, now = 0;
	__u32 zero = 0, slot;
	int pod = 0;

	cfg = bpf_map_lookup_elem(&settings, &zero);
	if (cfg && cfg->host_netns) {
		netns = bpf_get_netns_cookie(ctx);
		pod = netns != cfg->host_netns;
	}
	svc = lookup(&key, pod);
	if (!svc)
		return 0;
	if (svc->count == 0)
		return svc->verdict == VERDICT_DROP ? -EPERM : -ECONNREFUSED;
	if (svc->affinity_timeout) {
		struct aff_key ak = {};
		struct aff_value *av;

		ak.netns = netns;
		ak.svc = key;
		now = bpf_ktime_get_ns();
		av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && now - av->last <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			struct member_key mk = {};

			mk.svc = key;
			mk.endpoint = av->endpoint;
			if (bpf_map_lookup_elem(&members, &mk)) {
				av->last = now;
				*out = av->endpoint;
				return 1;
			}
		}
	}
	if (svc->algorithm == ALG_MAGLEV && svc->maglev_size) {
		__u32 idx = svc->maglev_offset +
			    below(mix64(netns ^ mix64(svc->seed + GOLDEN)), svc->maglev_size);
		__u32 *rel = bpf_map_lookup_elem(&maglev, &idx);

		if (!rel)
			return 0;
		slot = svc->offset + *rel;
	} else {
		slot = svc->offset + bpf_get_prandom_u32() % svc->count;
	}
	be = bpf_map_lookup_elem(&backends, &slot);
	if (!be)
		return 0;
	*out = *be;
	if (svc->affinity_timeout) {
		struct aff_key ak = {};
		struct aff_value av = {};

		ak.netns = netns;
		ak.svc = key;
		av.endpoint = *be;
		av.last = now;
		bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
	}
	return 1;
}

static __always_inline int handled(__u32 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

SEC("cgroup/connect4")
int weir_connect4(struct bpf_sock_addr *ctx)
{
	struct svc_key key = {};
	struct backend chosen, *be = &chosen;
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

	reject = pick(ctx, &key, &chosen);
	if (reject <= 0) {
		if (reject < 0) {
			bpf_set_retval(reject);
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
	struct backend chosen, *be = &chosen;
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

	reject = pick(ctx, &key, &chosen);
	if (reject <= 0) {
		if (reject < 0) {
			bpf_set_retval(reject);
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
	struct backend chosen, *be = &chosen;
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

	reject = pick(ctx, &key, &chosen);
	if (reject <= 0) {
		if (reject < 0) {
			bpf_set_retval(reject);
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
	struct backend chosen, *be = &chosen;
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

	reject = pick(ctx, &key, &chosen);
	if (reject <= 0) {
		if (reject < 0) {
			bpf_set_retval(reject);
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
