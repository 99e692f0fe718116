"""The bcc program: uprobes on the TLS read/write calls (OpenSSL's, shared or linked into an
executable, and Go's crypto/tls), and the tracepoints that tell which socket (fd) and which
connection (5-tuple) each call belongs to.

Only stable interfaces are read: function arguments, syscall arguments, tracepoint fields
(bcc lays them out from tracefs at load time) and user memory. No kernel struct is read, so
headers older than the running kernel compile it correctly.

How a chunk of cleartext finds its connection:
- SSL_write/SSL_read (and _ex): the entry probe remembers the call per thread; the syscalls
  made during the call (read, write, send*, recv*) name the socket fd. A call served from
  OpenSSL's buffer makes no syscall: the fd last seen for that SSL object is used.
- connect(): the thread's fd is remembered; inet_sock_set_state to SYN_SENT, which runs in
  that thread, ties the kernel socket to (process, fd); the change to ESTABLISHED brings the
  full 5-tuple (role: client).
- accept()/accept4(): the accepted child socket turned ESTABLISHED earlier (in softirq) and
  was filed under its peer address; the peer address that accept() copies to user memory
  finds it and ties it to (process, new fd) (role: server).
Go's crypto/tls (Go 1.17+, amd64 register ABI) is probed the same way, with two differences:
the call is keyed by goroutine (the g pointer in R14), not thread, since a goroutine may
resume on another thread; and Read returns through uprobes on each RET instruction (the
loader finds them), never a uretprobe, which breaks on Go's movable stacks (Write is
reported at its call). The *tls.Conn plays the SSL object's part, and its socket is read from
the net.Conn inside it when that is a *net.TCPConn (offsets below); otherwise the syscalls
made during a Read name it.
Per SSL object and direction, the bytes moved so far are counted here, so every event carries
its stream offset: an event lost in the ring buffer, or bytes beyond what one call copies,
become a gap at the right place instead of silently shifting the stream. The counts end with
the socket's close() (the SSL object's address and the fd number are often reused together).
"""

from __future__ import annotations

import platform

# Event kinds (struct event_t.kind).
KIND_WRITE = 1      # cleartext the process sent (SSL_write)
KIND_READ = 2       # cleartext the process received (SSL_read)
KIND_CLOSE = 3      # close() of a socket that carried TLS
KIND_EXIT = 4       # a process that made TLS calls exited

# Roles (tuple_t.role).
ROLE_UNKNOWN = 0
ROLE_CLIENT = 1
ROLE_SERVER = 2

# Event flags.
FLAG_TUPLE = 1        # the event carries the connection's 5-tuple
FLAG_READ_FAILED = 2  # the user buffer could not be read (the chunk is a gap)

# Counters (BPF_PERCPU_ARRAY counters), summed over CPUs by the loader.
COUNTERS = ("calls", "chunks", "lost_events", "lost_bytes", "truncated_bytes", "read_errors",
            "no_fd_calls", "go_calls", "go_syscall_fds")

CHUNK_SIZE = 16384          # bytes of cleartext per event
DEFAULT_CHUNKS_PER_CALL = 16  # events per SSL call: 256 KiB; beyond that a gap
DEFAULT_RINGBUF_PAGES = 2048  # 8 MiB ring buffer (a power of two of 4 KiB pages)

# Go: where the socket of a *tls.Conn is, the same in every Go version from 1.9 (when
# internal/poll appeared) to 1.23 at least:
GO_OFFSETS = {
    # crypto/tls.Conn's first field is `conn net.Conn` (src/crypto/tls/conn.go, since Go 1.0);
    # an interface value is {itab, data}.
    "GO_TLS_CONN_CONN": 0,
    "GO_IFACE_DATA": 8,
    # runtime.itab {inter, _type, hash uint32, ...} (src/runtime/runtime2.go; internal/abi.ITab
    # from 1.22): the dynamic type's hash, the same in every itab of that type.
    "GO_ITAB_HASH": 16,
    # net.TCPConn embeds net.conn {fd *netFD} (src/net/tcpsock.go, src/net/net.go).
    "GO_TCPCONN_NETFD": 0,
    # net.netFD starts with pfd poll.FD (src/net/fd_posix.go), poll.FD with fdmu fdMutex
    # {state uint64; rsema, wsema uint32} then Sysfd int (src/internal/poll/fd_unix.go,
    # fd_mutex.go).
    "GO_NETFD_SYSFD": 16,
    # A wrapper conn is searched for a net.Conn field at its first this many 8-byte words.
    "GO_WRAPPER_FIELDS": 6,
}
GO_TCPCONN_HASHES_MAX = 1024     # *net.TCPConn type hashes (Go changed its hash function)

# Header layout of struct event_t, as packed below (little endian, no padding).
EVENT_HEADER_FORMAT = "<QQIIiBBBBIIQHH16s16s"
EVENT_HEADER_SIZE = 8 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 16 + 16

SOURCE = r"""
#include <uapi/linux/ptrace.h>

#define CHUNK_SIZE __CHUNK_SIZE__
#define CHUNKS_PER_CALL __CHUNKS_PER_CALL__
#define KIND_WRITE 1
#define KIND_READ 2
#define KIND_CLOSE 3
#define KIND_EXIT 4
#define ROLE_CLIENT 1
#define ROLE_SERVER 2
#define FLAG_TUPLE 1
#define FLAG_READ_FAILED 2
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define PROTO_TCP 6
#define FAMILY_INET 2
#define FAMILY_INET6 10

enum counter { C_CALLS, C_CHUNKS, C_LOST_EVENTS, C_LOST_BYTES, C_TRUNCATED_BYTES,
               C_READ_ERRORS, C_NO_FD_CALLS, C_GO_CALLS, C_GO_SYSCALL_FDS, C_COUNT };

struct tuple_t {
    u8 family;          /* FAMILY_INET or FAMILY_INET6; addresses are IPv6-sized, v4 mapped */
    u8 role;
    u8 tls;             /* an SSL call used this socket: report its close */
    u8 pad;
    u16 lport;
    u16 rport;
    u8 laddr[16];
    u8 raddr[16];
    u64 ssl;            /* the SSL object last seen on this socket (0: none yet) */
};

struct event_t {
    u64 ts_ns;          /* CLOCK_MONOTONIC */
    u64 ssl;            /* the SSL object: one TLS connection */
    u32 tgid;
    u32 tid;
    s32 fd;
    u8 kind;
    u8 role;
    u8 family;
    u8 flags;
    u32 len;            /* cleartext bytes in data */
    u32 total;          /* bytes the call moved */
    u64 offset;         /* stream offset of data[0] in this direction of this SSL object */
    u16 lport;
    u16 rport;
    u8 laddr[16];
    u8 raddr[16];
    char data[CHUNK_SIZE];
} __attribute__((packed));

#define EVENT_HEADER_SIZE (sizeof(struct event_t) - CHUNK_SIZE)

struct active_t {       /* an SSL call in progress on a thread (a Go call: on a goroutine) */
    u64 ssl;
    u64 buf;
    u64 size_ptr;       /* _ex variants: where the byte count is written */
    s32 fd;
    u32 kind;
    u64 started;        /* Go: when it began, to tell it from the goroutine's next call */
};

struct ssl_key_t { u32 tgid; u32 pad; u64 ssl; };
struct ssl_state_t { s32 fd; u32 pad; u64 sent; u64 received; };
struct conn_key_t { u32 tgid; s32 fd; };
struct peer_key_t { u8 addr[16]; u16 port; u16 pad; u32 pad2; };

BPF_RINGBUF_OUTPUT(events, __RINGBUF_PAGES__);
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_PERCPU_ARRAY(counters, u64, C_COUNT);
BPF_HASH(active, u64, struct active_t, 16384);
BPF_TABLE("lru_hash", struct ssl_key_t, struct ssl_state_t, ssl_states, 65536);
BPF_TABLE("lru_hash", struct conn_key_t, struct tuple_t, conns, 65536);
BPF_HASH(connecting, u64, s32, 16384);                   /* thread -> fd in connect() */
BPF_TABLE("lru_hash", u64, struct conn_key_t, sock_owner, 65536);  /* socket -> (tgid, fd) */
BPF_TABLE("lru_hash", struct peer_key_t, struct tuple_t, accepted, 65536);
BPF_HASH(accepting, u64, u64, 16384);                    /* thread -> sockaddr of accept() */
BPF_TABLE("lru_hash", u32, u8, tls_processes, 65536);
__GO_MAPS__
// The connection's 5-tuple and role, as the event carries them.
static __always_inline void copy_tuple(struct event_t *ev, struct tuple_t *t) {
    ev->flags = FLAG_TUPLE;
    ev->role = t->role;
    ev->family = t->family;
    ev->lport = t->lport;
    ev->rport = t->rport;
    __builtin_memcpy(ev->laddr, t->laddr, 16);
    __builtin_memcpy(ev->raddr, t->raddr, 16);
}

static __always_inline void count(int which, u64 amount) {
    int key = which;
    u64 *value = counters.lookup(&key);
    if (value)
        *value += amount;
}

/* ---- SSL calls ------------------------------------------------------------------------ */

static __always_inline int enter_call(struct pt_regs *ctx, u32 kind, u64 size_ptr) {
    u64 id = bpf_get_current_pid_tgid();
    struct active_t call = {};
    call.ssl = PT_REGS_PARM1(ctx);
    call.buf = PT_REGS_PARM2(ctx);
    call.size_ptr = size_ptr;
    call.fd = -1;
    call.kind = kind;
    active.update(&id, &call);
    return 0;
}

/* A call that moved `moved` bytes of c.buf: count its stream, send its chunks. */
static __always_inline int report_call(u64 id, struct active_t c, u64 moved) {
    count(C_CALLS, 1);

    u32 tgid = id >> 32;
    struct ssl_key_t skey = {};
    skey.tgid = tgid;
    skey.ssl = c.ssl;
    struct ssl_state_t fresh = {};
    fresh.fd = -1;
    struct ssl_state_t *state = ssl_states.lookup_or_try_init(&skey, &fresh);
    if (!state)
        return 0;
    if (c.fd >= 0 && state->fd != c.fd) {
        if (state->fd >= 0) {
            /* A new socket under this SSL object: its streams restart. */
            state->sent = 0;
            state->received = 0;
        }
        /* (The first socket seen: calls before it, served from a buffer without a syscall,
           were this socket's too, and keep their offsets.) */
        state->fd = c.fd;
    }
    s32 fd = state->fd;
    if (fd < 0)
        count(C_NO_FD_CALLS, 1);
    u64 start;
    if (c.kind == KIND_WRITE) {
        start = state->sent;
        state->sent += moved;
    } else {
        start = state->received;
        state->received += moved;
    }
    u8 flag = 1;
    tls_processes.update(&tgid, &flag);

    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return 0;
    ev->ts_ns = bpf_ktime_get_ns();
    ev->ssl = c.ssl;
    ev->tgid = tgid;
    ev->tid = (u32)id;
    ev->fd = fd;
    ev->kind = c.kind;
    ev->flags = 0;
    ev->total = moved > 0xffffffff ? 0xffffffff : moved;
    ev->role = 0;
    ev->family = 0;
    ev->lport = 0;
    ev->rport = 0;
    if (fd >= 0) {
        struct conn_key_t ckey = {};
        ckey.tgid = tgid;
        ckey.fd = fd;
        struct tuple_t *t = conns.lookup(&ckey);
        if (t) {
            t->tls = 1;
            t->ssl = c.ssl;
            copy_tuple(ev, t);
        }
    }
    u8 base_flags = ev->flags;
    for (int i = 0; i < CHUNKS_PER_CALL; i++) {
        u64 off = (u64)i * CHUNK_SIZE;
        if (off >= moved)
            return 0;
        u64 left = moved - off;
        u32 n = left > CHUNK_SIZE ? CHUNK_SIZE : (u32)left;
        ev->offset = start + off;
        ev->len = n;
        ev->flags = base_flags;
        if (bpf_probe_read_user(ev->data, n, (void *)(c.buf + off)) != 0) {
            ev->flags |= FLAG_READ_FAILED;
            count(C_READ_ERRORS, 1);
            n = 0;
        }
        if (events.ringbuf_output(ev, EVENT_HEADER_SIZE + n, 0) != 0) {
            count(C_LOST_EVENTS, 1);
            count(C_LOST_BYTES, ev->len);
        } else {
            count(C_CHUNKS, 1);
        }
    }
    if (moved > (u64)CHUNKS_PER_CALL * CHUNK_SIZE)
        count(C_TRUNCATED_BYTES, moved - (u64)CHUNKS_PER_CALL * CHUNK_SIZE);
    return 0;
}

static __always_inline int exit_call(struct pt_regs *ctx, int ex_variant) {
    u64 id = bpf_get_current_pid_tgid();
    struct active_t *call = active.lookup(&id);
    if (!call)
        return 0;
    struct active_t c = *call;
    active.delete(&id);
    /* SSL_read/SSL_write and the _ex variants return int: only the low 32 bits of the
       register are the value (-1 must not read as 4294967295). */
    int ret = (int)PT_REGS_RC(ctx);
    u64 moved = 0;
    if (ex_variant) {
        if (ret != 1 || !c.size_ptr)
            return 0;
        bpf_probe_read_user(&moved, sizeof(moved), (void *)c.size_ptr);
    } else {
        if (ret <= 0)
            return 0;
        moved = ret;
    }
    if (moved == 0)
        return 0;
    return report_call(id, c, moved);
}

int enter_write(struct pt_regs *ctx) { return enter_call(ctx, KIND_WRITE, 0); }
int enter_read(struct pt_regs *ctx) { return enter_call(ctx, KIND_READ, 0); }
int enter_write_ex(struct pt_regs *ctx) { return enter_call(ctx, KIND_WRITE, PT_REGS_PARM4(ctx)); }
int enter_read_ex(struct pt_regs *ctx) { return enter_call(ctx, KIND_READ, PT_REGS_PARM4(ctx)); }
int exit_call_plain(struct pt_regs *ctx) { return exit_call(ctx, 0); }
int exit_call_ex(struct pt_regs *ctx) { return exit_call(ctx, 1); }
__GO_PROBES__
/* ---- the socket behind an SSL call ----------------------------------------------------- */

static __always_inline void note_fd(s64 fd) {
    u64 id = bpf_get_current_pid_tgid();
    struct active_t *call = active.lookup(&id);
    if (call) {
        if (call->fd < 0)
            call->fd = (s32)fd;
        return;
    }
    __GO_NOTE_FD__
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { note_fd(args->fd); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { note_fd(args->fd); return 0; }

/* ---- connections: connect, accept, state changes, close, exit -------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 id = bpf_get_current_pid_tgid();
    s32 fd = args->fd;
    connecting.update(&id, &fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    u64 id = bpf_get_current_pid_tgid();
    connecting.delete(&id);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == TCP_SYN_SENT) {
        u64 id = bpf_get_current_pid_tgid();
        s32 *fd = connecting.lookup(&id);
        if (fd) {
            struct conn_key_t owner = {};
            owner.tgid = id >> 32;
            owner.fd = *fd;
            sock_owner.update(&sk, &owner);
        }
        return 0;
    }
    if (args->newstate == TCP_CLOSE) {
        sock_owner.delete(&sk);
        return 0;
    }
    if (args->newstate != TCP_ESTABLISHED)
        return 0;
    struct tuple_t t = {};
    t.family = args->family;
    t.lport = args->sport;
    t.rport = args->dport;
    bpf_probe_read_kernel(t.laddr, 16, args->saddr_v6);
    bpf_probe_read_kernel(t.raddr, 16, args->daddr_v6);
    struct conn_key_t *owner = sock_owner.lookup(&sk);
    if (owner) {
        struct conn_key_t key = *owner;
        t.role = ROLE_CLIENT;
        conns.update(&key, &t);
        sock_owner.delete(&sk);
    } else if (args->oldstate == TCP_SYN_RECV) {
        struct peer_key_t peer = {};
        bpf_probe_read_kernel(peer.addr, 16, args->daddr_v6);
        peer.port = args->dport;
        t.role = ROLE_SERVER;
        accepted.update(&peer, &t);
    }
    return 0;
}

static __always_inline void enter_accept(u64 sockaddr) {
    u64 id = bpf_get_current_pid_tgid();
    accepting.update(&id, &sockaddr);
}

static __always_inline void exit_accept(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u64 *sockaddr = accepting.lookup(&id);
    if (!sockaddr)
        return;
    u64 addr = *sockaddr;
    accepting.delete(&id);
    if (ret < 0 || !addr)
        return;
    u16 family = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)addr);
    struct peer_key_t peer = {};
    u16 port_be = 0;
    bpf_probe_read_user(&port_be, sizeof(port_be), (void *)(addr + 2));
    peer.port = (port_be >> 8) | ((port_be & 0xff) << 8);
    if (family == FAMILY_INET) {
        peer.addr[10] = 0xff;
        peer.addr[11] = 0xff;
        bpf_probe_read_user(&peer.addr[12], 4, (void *)(addr + 4));
    } else if (family == FAMILY_INET6) {
        bpf_probe_read_user(peer.addr, 16, (void *)(addr + 8));
    } else {
        return;
    }
    struct tuple_t *t = accepted.lookup(&peer);
    if (!t)
        return;
    struct tuple_t found = *t;
    accepted.delete(&peer);
    struct conn_key_t key = {};
    key.tgid = id >> 32;
    key.fd = (s32)ret;
    conns.update(&key, &found);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept) { enter_accept((u64)args->upeer_sockaddr); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { enter_accept((u64)args->upeer_sockaddr); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { exit_accept(args->ret); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { exit_accept(args->ret); return 0; }

static __always_inline void emit_control(u32 kind, u32 tgid, s32 fd, struct tuple_t *t) {
    u32 zero = 0;
    struct event_t *ev = scratch.lookup(&zero);
    if (!ev)
        return;
    ev->ts_ns = bpf_ktime_get_ns();
    ev->ssl = 0;
    ev->tgid = tgid;
    ev->tid = (u32)bpf_get_current_pid_tgid();
    ev->fd = fd;
    ev->kind = kind;
    ev->flags = 0;
    ev->len = 0;
    ev->total = 0;
    ev->offset = 0;
    ev->role = 0;
    ev->family = 0;
    ev->lport = 0;
    ev->rport = 0;
    if (t) {
        copy_tuple(ev, t);
    }
    if (events.ringbuf_output(ev, EVENT_HEADER_SIZE, 0) != 0)
        count(C_LOST_EVENTS, 1);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    struct conn_key_t key = {};
    key.tgid = id >> 32;
    key.fd = args->fd;
    struct tuple_t *t = conns.lookup(&key);
    if (!t)
        return 0;
    if (t->tls)
        emit_control(KIND_CLOSE, key.tgid, key.fd, t);
    if (t->ssl) {
        /* The SSL object's streams end with its socket: a server that frees it and gets
           the same address and the same fd number for its next connection (malloc and
           the lowest free fd make that common) must count that one from 0 again. */
        struct ssl_key_t skey = {};
        skey.tgid = key.tgid;
        skey.ssl = t->ssl;
        ssl_states.delete(&skey);
    }
    conns.delete(&key);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    if (!args->group_dead)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!tls_processes.lookup(&tgid))
        return 0;
    tls_processes.delete(&tgid);
    emit_control(KIND_EXIT, tgid, -1, 0);
    return 0;
}
"""


GO_MAPS = r"""
struct go_key_t { u32 tgid; u32 pad; u64 g; };           /* one goroutine */
struct go_thread_t { struct go_key_t key; u64 started; };
BPF_TABLE("lru_hash", struct go_key_t, struct active_t, go_active, 16384);
/* thread -> the Go call whose socket its syscalls name (only when the conn could not tell) */
BPF_TABLE("lru_hash", u64, struct go_thread_t, go_threads, 16384);
/* the type hashes of *net.TCPConn in the Go binaries hooked (filled in by the loader) */
BPF_HASH(go_tcpconn_hashes, u32, u8, __GO_TCPCONN_HASHES_MAX__);
"""

# Go's register ABI on amd64 (src/cmd/compile/abi-internal.md): integer arguments and results
# in RAX, RBX, RCX, RDI, RSI, R8-R11; the current goroutine's g in R14. For
# (*tls.Conn).Write/Read(b []byte) (int, error): c in RAX, b = {RBX ptr, RCX len, RDI cap};
# at Read's RET, n in RAX and the error in RBX/RCX.
GO_PROBES = r"""
/* ---- Go crypto/tls ----------------------------------------------------------------------- */

static __always_inline s32 go_tcpconn_fd(u64 iface_addr) {
    /* The socket of a net.Conn interface value whose dynamic type is *net.TCPConn. */
    u64 iface[2] = {};
    if (bpf_probe_read_user(iface, sizeof(iface), (void *)iface_addr) != 0 || !iface[0])
        return -1;
    u32 hash = 0;
    if (bpf_probe_read_user(&hash, sizeof(hash), (void *)(iface[0] + GO_ITAB_HASH)) != 0)
        return -1;
    if (!go_tcpconn_hashes.lookup(&hash))
        return -2;
    u64 netfd = 0;
    if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(iface[1] + GO_TCPCONN_NETFD)) != 0
            || !netfd)
        return -1;
    s64 sysfd = -1;
    if (bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(netfd + GO_NETFD_SYSFD)) != 0)
        return -1;
    return sysfd >= 0 && sysfd < 0x7fffffff ? (s32)sysfd : -1;
}

static __always_inline s32 go_conn_fd(u64 conn) {
    u64 iface_addr = conn + GO_TLS_CONN_CONN;
    s32 fd = go_tcpconn_fd(iface_addr);
    if (fd != -2)
        return fd;
    /* A wrapper (a proxy's or a multiplexer's conn type, cmux.MuxConn and the like) that
       holds the net.Conn as one of its first fields: one level down. A field is taken for
       a *net.TCPConn only when it reads as an itab with that type's hash. */
    u64 data = 0;
    if (bpf_probe_read_user(&data, sizeof(data), (void *)(iface_addr + GO_IFACE_DATA)) != 0
            || !data)
        return -1;
#pragma unroll
    for (int field = 0; field < GO_WRAPPER_FIELDS; field++) {
        fd = go_tcpconn_fd(data + field * 8);
        if (fd >= 0)
            return fd;
    }
    return -1;
}

/* The current goroutine: its g is in R14 under the register ABI. */
static __always_inline struct go_key_t go_key(struct pt_regs *ctx, u64 id) {
    struct go_key_t key = {};
    key.tgid = id >> 32;
    key.g = ctx->r14;
    return key;
}

static __always_inline int go_enter(struct pt_regs *ctx, u32 kind) {
    u64 id = bpf_get_current_pid_tgid();
    struct go_key_t key = go_key(ctx, id);
    struct active_t call = {};
    call.ssl = ctx->ax;
    call.buf = ctx->bx;
    call.kind = kind;
    call.started = bpf_ktime_get_ns();
    call.fd = go_conn_fd(call.ssl);
    if (kind == KIND_WRITE) {
        /* Write sends all of b or fails (and the connection is then broken for good), so
           its bytes are reported now, before they reach the socket, and Write needs no
           probes on its RETs. Reported at its return, a request would often come after
           the response, which another goroutine (net/http's readLoop) reads while this
           one has not reached its RET yet. Without the conn's socket, the one last seen
           for this conn is used (or none yet: user space holds the chunk until a later
           call names it). */
        u64 length = ctx->cx;
        if (length > 0) {
            count(C_GO_CALLS, 1);
            report_call(id, call, length);
        }
        return 0;
    }
    go_active.update(&key, &call);
    if (call.fd < 0) {
        /* The syscalls this thread makes next name the socket (note_fd). */
        struct go_thread_t thread = {};
        thread.key = key;
        thread.started = call.started;
        go_threads.update(&id, &thread);
    }
    return 0;
}

int go_enter_write(struct pt_regs *ctx) { return go_enter(ctx, KIND_WRITE); }
int go_enter_read(struct pt_regs *ctx) { return go_enter(ctx, KIND_READ); }

/* At each RET of (*tls.Conn).Read: the goroutine may be on another thread now. */
int go_return(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct go_key_t key = go_key(ctx, id);
    struct active_t *call = go_active.lookup(&key);
    if (!call)
        return 0;
    struct active_t c = *call;
    go_active.delete(&key);
    struct go_thread_t *thread = go_threads.lookup(&id);
    if (thread && thread->key.g == key.g)
        go_threads.delete(&id);
    s64 moved = (s64)ctx->ax;
    if (moved <= 0)
        return 0;
    count(C_GO_CALLS, 1);
    return report_call(id, c, (u64)moved);
}
"""

GO_NOTE_FD = r"""
    struct go_thread_t *thread = go_threads.lookup(&id);
    if (!thread)
        return;
    struct go_key_t key = thread->key;
    struct active_t *go_call = go_active.lookup(&key);
    if (!go_call || go_call->started != thread->started) {
        go_threads.delete(&id);     /* that call is over */
        return;
    }
    if (go_call->fd < 0) {
        go_call->fd = (s32)fd;
        count(C_GO_SYSCALL_FDS, 1);
    }
"""


def go_supported(machine: str | None = None) -> bool:
    """Whether this machine's Go probes compile: they read amd64 registers."""
    return (machine or platform.machine()) in ("x86_64", "amd64")


def render(chunks_per_call: int = DEFAULT_CHUNKS_PER_CALL,
           ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, go: bool | None = None) -> str:
    """The program text with its sizes filled in; the Go probes only where they compile
    (go=None: this machine's architecture decides)."""
    if chunks_per_call < 1:
        raise ValueError(f"chunks_per_call {chunks_per_call}: expected at least 1")
    if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
        raise ValueError(f"ringbuf_pages {ringbuf_pages}: expected a power of two")
    with_go = go_supported() if go is None else go
    text = (SOURCE.replace("__GO_MAPS__", GO_MAPS if with_go else "")
            .replace("__GO_PROBES__", GO_PROBES if with_go else "")
            .replace("__GO_NOTE_FD__", GO_NOTE_FD if with_go else ""))
    defines = "".join(f"#define {name} {value}\n" for name, value in GO_OFFSETS.items())
    text = text.replace("#define CHUNK_SIZE", defines + "#define CHUNK_SIZE", 1)
    return (text.replace("__CHUNK_SIZE__", str(CHUNK_SIZE))
            .replace("__CHUNKS_PER_CALL__", str(chunks_per_call))
            .replace("__RINGBUF_PAGES__", str(ringbuf_pages))
            .replace("__GO_TCPCONN_HASHES_MAX__", str(GO_TCPCONN_HASHES_MAX)))
