/* The forker's steady-state loop in C (forker.py): receive an order, clone a worker, answer. No Python runs here.
 *
 * Why: a clone write-protects every page the forker shares with its workers, so each page its Python loop writes
 * after a clone (reference counts, frames, the objects of the order) is a fault and a 4 KiB copy: ~335 a clone, and
 * with the interpreter's own work ~1/3 of the forker's CPU a run (perf). This loop writes its stack and one buffer.
 *
 * It takes only the common order: a worker for a run dir, cloned into fresh namespaces once the first clone of this
 * forker showed they work, with its cgroups deferred to the zygote (confine.release_worker). Anything else (a session
 * root, or a step that fails here: setns, clone) goes back to forker.py's Python loop as the packet it received,
 * which handles it as it handles every order. The same sequence as _sys.fork_like_clone (CPython's os.fork with the
 * raw system call) and namespaces_clone.fork_in_parent (the sockets and the pipe its child expects).
 *
 * A clone it makes also takes the steps of its worker that need no request and are system calls only (prelude()):
 * in Python they were ~40 prctl calls through ctypes and four system calls for each of ~40 Landlock rules, and every
 * object they touched a page copied. What a step could not do here is left to Python, which takes it as it always did.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
/* Numbers from 424 on are the same on every architecture (confine/_sys.py: NR, _NR_MOUNT_SETATTR). */
#define NR_MOUNT_SETATTR 442
#define NR_LANDLOCK_CREATE_RULESET 444
#define NR_LANDLOCK_ADD_RULE 445
#define LANDLOCK_RULE_PATH_BENEATH 1
#define MOUNT_ATTR_RDONLY_ 0x1
#define AT_RECURSIVE_ 0x8000
#define CAP_V3 0x20080522
#define MAX_RULESET_ATTR 64

#define ORDER_HEAD 9          /* forker.ORDER_HEAD: "<QB", the order's id and its kind */
#define ORDER_RUN 0           /* forker.ORDER_RUN: a worker for a run dir */
#define MAX_PACKET (64 << 10) /* protocol.MAX_PACKET_BYTES */
#define CLONE_CHILD_SETTID_ 0x01000000

typedef struct {
    int sock;
    unsigned long flags;
    int template_ns;
    int host_ns;
    void *tid_field;
    int version;
    long zygote; /* the zygote's pid in the host's /proc: the workers' parent */
    unsigned uid, gid;
} Loop;

/* The steps of a worker's prelude(), as Python planned them (worker_fork.native_prelude): the securebits to lock
 * and the capabilities to drop from the bounding set (caps.drop_bounding_set_early), and the Landlock ruleset of
 * the static rules and every run's readable paths (landlock.prebuild_plan): its attribute struct (none: no
 * ruleset) and each rule's path and rights, a file's rights masked by file_rights. The paths point into the bytes
 * objects of the plan, which forker.py holds while serve() runs; the child only reads them. */
typedef struct {
    unsigned long securebits;
    int last_cap, setpcap;
    const char *ruleset_attr;
    Py_ssize_t ruleset_attr_size;
    Py_ssize_t rules;
    const char **paths;
    unsigned long long *rights;
    unsigned long long file_rights;
} Prelude;

/* What prelude() did: 0 for a step done, else its errno; the ruleset's fd, or -1. */
typedef struct {
    int read_only, bounding, ruleset;
} Staged;

/* What a worker's namespaces' setup met (namespaces_clone.native_detail turns it into the layer's detail): per
 * optional mount, 0 (done), -1 (no such dir) or its errno; the note the zygote sent with its cgroups. */
typedef struct {
    int proc, shm, run, cgroup_ns;
    char note[1024]; /* namespaces_clone.NOTE_BYTES */
    Py_ssize_t note_len;
} Setup;

static long raw_clone(unsigned long flags, void *tid_field) {
#if defined(__x86_64__)
    return syscall(SYS_clone, flags, NULL, NULL, tid_field, NULL);
#elif defined(__aarch64__)
    return syscall(SYS_clone, flags, NULL, NULL, NULL, tid_field);
#else
#error "clone's argument order is only known for x86_64 and aarch64"
#endif
}

static void close_all(const int *fds, int count) {
    for (int i = 0; i < count; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* One frame as protocol.encode makes it: a 4-byte big-endian length, then the JSON header. */
static int send_frame(int sock, const char *json, const int *fds, int nfds) {
    char packet[4 + 512];
    size_t len = strlen(json);
    if (len > sizeof(packet) - 4)
        return -1;
    packet[0] = (char)(len >> 24);
    packet[1] = (char)(len >> 16);
    packet[2] = (char)(len >> 8);
    packet[3] = (char)len;
    memcpy(packet + 4, json, len);
    struct iovec iov = {.iov_base = packet, .iov_len = len + 4};
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
    }
    ssize_t sent;
    do
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    return sent == (ssize_t)(len + 4) ? 0 : -1;
}

static int send_failed(const Loop *loop, uint64_t id, int err, const char *what) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"v\":%d,\"type\":\"fork-failed\",\"blobs\":[],\"id\":%llu,\"errno\":%d,\"error\":\"%s: [Errno %d] %s\"}",
             loop->version, (unsigned long long)id, err, what, err, strerror(err));
    return send_frame(loop->sock, json, NULL, 0);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t done = write(fd, text, strlen(text));
    int err = done == (ssize_t)strlen(text) ? 0 : (done < 0 ? errno : EIO);
    close(fd);
    return err;
}

static long host_parent(void) { /* our parent's pid, from /proc/self/stat (the host's /proc until we mount ours) */
    char stat[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, stat, sizeof(stat) - 1);
    close(fd);
    if (got <= 0)
        return -1;
    stat[got] = 0;
    char *end = strrchr(stat, ')');
    return end && end[1] == ' ' && end[2] && end[3] == ' ' ? strtol(end + 4, NULL, 10) : -1;
}

static void report(int ack_w, const char *text) {
    ssize_t ignored = write(ack_w, text, strlen(text)); /* EPIPE: nobody reads reports past the first clone */
    (void)ignored;
    close(ack_w);
}

static int optional_mount(const char *src, const char *target, const char *fstype, unsigned long flags,
                          const char *data) {
    struct stat st;
    if (stat(target, &st) != 0 || !S_ISDIR(st.st_mode))
        return -1;
    return mount(src, target, fstype, flags, data) == 0 ? 0 : errno;
}

/* In the child, as namespaces_clone._init_child does it: die with the zygote, map ids, make / private, name the
 * host, the fresh /proc, /dev/shm and an empty /run, report, wait for the zygote's note and join the cgroups it
 * opened, then a cgroup namespace of its own. A step that fails exits (its run fails, never less confined). */
static void init_child(const Loop *loop, int go_r, int ack_w, Setup *out) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || host_parent() != loop->zygote)
        _exit(0); /* the zygote died before the death signal was set */
    char text[64], failed[128];
    const char *step = NULL;
    int err = 0;
    if ((err = write_file("/proc/self/setgroups", "deny")))
        step = "write /proc/self/setgroups";
    if (!step) {
        snprintf(text, sizeof(text), "%u %u 1\n", loop->uid, loop->uid);
        if ((err = write_file("/proc/self/uid_map", text)))
            step = "write /proc/self/uid_map";
    }
    if (!step) {
        snprintf(text, sizeof(text), "%u %u 1\n", loop->gid, loop->gid);
        if ((err = write_file("/proc/self/gid_map", text)))
            step = "write /proc/self/gid_map";
    }
    if (!step && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        err = errno, step = "mount (make / private)";
    if (!step && sethostname("sandbox", 7) != 0)
        err = errno, step = "sethostname";
    if (step) {
        snprintf(failed, sizeof(failed), "%d %s", err ? err : EPERM, step);
        report(ack_w, failed);
        _exit(0);
    }
    out->proc = optional_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* namespaces_clone.DEV_SHM_OPTIONS */
    out->shm = optional_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                              "size=64m,nr_inodes=4096,mode=1777");
    out->run = optional_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                              "size=4k,mode=755");
    report(ack_w, "ok");
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = out->note, .iov_len = sizeof(out->note)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    ssize_t got;
    do
        got = recvmsg(go_r, &msg, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    close(go_r);
    int joined = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (write(fd, "0", 1) != 1) /* "this thread" (our only one) into that cgroup's tasks: cgroup.enter */
                joined = 0;
            close(fd);
        }
    }
    if (got <= 0 || !joined || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        _exit(0); /* no note (the zygote failed or died), or the note says we are in a cgroup we are not in */
    out->note_len = got;
    out->cgroup_ns = unshare(CLONE_NEWCGROUP) == 0 ? 0 : errno; /* only now: our cgroup becomes its root */
}

/* namespaces.make_host_read_only_early: every mount of this private mount namespace read-only, but a private
 * /dev/shm (none mounted: it stays read-only). */
static int host_read_only(void) {
    uint64_t set_rdonly[4] = {MOUNT_ATTR_RDONLY_, 0, 0, 0}, clear_rdonly[4] = {0, MOUNT_ATTR_RDONLY_, 0, 0};
    if (syscall(NR_MOUNT_SETATTR, AT_FDCWD, "/", AT_RECURSIVE_, set_rdonly, sizeof(set_rdonly)) != 0)
        return errno;
    syscall(NR_MOUNT_SETATTR, AT_FDCWD, "/dev/shm", 0, clear_rdonly, sizeof(clear_rdonly));
    return 0;
}

/* caps.drop_bounding_set_early: lock the securebits and empty the bounding set, where CAP_SETPCAP allows it
 * (without it there is nothing to drop). */
static int drop_bounding_set(const Prelude *plan) {
    struct {
        uint32_t version;
        int pid;
    } header = {CAP_V3, 0};
    struct {
        uint32_t effective, permitted, inheritable;
    } data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        return errno;
    if (!(data[plan->setpcap / 32].effective & (1u << (plan->setpcap % 32))))
        return 0;
    if (prctl(PR_SET_SECUREBITS, plan->securebits, 0, 0, 0) != 0)
        return errno;
    for (int cap = 0; cap <= plan->last_cap; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
            return errno;
    return 0;
}

/* landlock.prebuild (and the rules of the readable paths): a ruleset holding the plan's rules (a path that does not
 * exist is skipped); -1 if any call fails, and Python builds it. */
static int static_ruleset(const Prelude *plan) {
    int ruleset = (int)syscall(NR_LANDLOCK_CREATE_RULESET, plan->ruleset_attr, (size_t)plan->ruleset_attr_size, 0);
    if (ruleset < 0)
        return -1;
    struct __attribute__((packed)) {
        uint64_t allowed_access;
        int32_t parent_fd;
    } rule;
    for (Py_ssize_t i = 0; i < plan->rules; i++) {
        int fd = open(plan->paths[i], O_PATH | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        int failed = fstat(fd, &st) != 0;
        if (!failed) {
            rule.allowed_access = S_ISDIR(st.st_mode) ? plan->rights[i] : plan->rights[i] & plan->file_rights;
            rule.parent_fd = fd;
            failed = syscall(NR_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0;
        }
        close(fd);
        if (failed) {
            close(ruleset);
            return -1;
        }
    }
    return ruleset;
}

/* In the child, its namespaces set up: what worker.serve's _become_worker did (the death signal and the parent's
 * check were init_child's) and the work of worker_fork._stage_before_request that is system calls only. */
static void prelude(const Prelude *plan, Staged *out) {
    if (setsid() < 0)
        _exit(70); /* its own session and process group, which the host kills */
    out->read_only = host_read_only();
    out->bounding = drop_bounding_set(plan);
    out->ruleset = plan->ruleset_attr_size ? static_ruleset(plan) : -1;
}

/* Clone the worker of one order. Returns 1 in the parent when answered, 0 in the parent when the order goes back to
 * Python (nothing was answered), -1 when the zygote cannot be answered; in the child it returns 2 with `*child`
 * filled (its ends: private socket, note socket, report pipe). */
static int fork_one(const Loop *loop, const Prelude *plan, uint64_t id, int *child, Setup *setup, Staged *staged) {
    int priv[2] = {-1, -1}, go[2] = {-1, -1}, ack[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, priv) != 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, go) != 0 || pipe2(ack, O_CLOEXEC) != 0 ||
        (loop->template_ns >= 0 && setns(loop->template_ns, CLONE_NEWNS) != 0)) {
        int fds[6] = {priv[0], priv[1], go[0], go[1], ack[0], ack[1]};
        close_all(fds, 6);
        return 0;
    }
    void *robust_head = NULL;
    size_t robust_len = 0;
    syscall(SYS_get_robust_list, 0, &robust_head, &robust_len);
    if (PySys_Audit("os.fork", NULL) < 0)
        PyErr_Clear();
    PyOS_BeforeFork();
    long pid = raw_clone(loop->flags | SIGCHLD | (loop->tid_field ? CLONE_CHILD_SETTID_ : 0), loop->tid_field);
    if (pid == 0) {
        syscall(SYS_set_robust_list, robust_head, robust_len); /* a clone leaves the child's list unregistered */
        PyOS_AfterFork_Child();
        int fds[3] = {priv[0], go[0], ack[0]}; /* the order socket is Python's object: forker.py closes it */
        close_all(fds, 3);
        init_child(loop, go[1], ack[1], setup);
        prelude(plan, staged);
        *child = priv[1];
        return 2;
    }
    int err = errno;
    PyOS_AfterFork_Parent();
    if (loop->template_ns >= 0 && setns(loop->host_ns, CLONE_NEWNS) != 0)
        _exit(70); /* every later clone, and the zygote's cgroup work, would happen in the template */
    int used[4] = {priv[1], go[1], ack[1], ack[0]}; /* ack[0]: a forker past its first clone reads no report */
    close_all(used, 4);
    if (pid < 0) {
        int fds[2] = {priv[0], go[0]};
        close_all(fds, 2);
        errno = err;
        return 0;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (pidfd < 0) { /* already gone (its setup failed): the zygote reaps it */
        err = errno;
        int fds[2] = {priv[0], go[0]};
        close_all(fds, 2);
        return send_failed(loop, id, err, "the new worker died") == 0 ? 1 : -1;
    }
    char json[256];
    snprintf(json, sizeof(json),
             "{\"v\":%d,\"type\":\"forked\",\"blobs\":[],\"id\":%llu,\"pid\":%ld,\"awaits_cgroups\":true}",
             loop->version, (unsigned long long)id, pid);
    int answer[3] = {priv[0], pidfd, go[0]};
    int sent = send_frame(loop->sock, json, answer, 3);
    close_all(answer, 3);
    return sent == 0 ? 1 : -1;
}

/* The plan's tuple (securebits, last_cap, setpcap, ruleset_attr, ((path, rights), ...), file_rights) into `plan`,
 * whose arrays free_plan() frees. */
static int read_plan(PyObject *tuple, Prelude *plan) {
    PyObject *rules;
    if (!PyArg_ParseTuple(tuple, "kiiy#O!K:prelude", &plan->securebits, &plan->last_cap, &plan->setpcap,
                          &plan->ruleset_attr, &plan->ruleset_attr_size, &PyTuple_Type, &rules, &plan->file_rights))
        return -1;
    if (plan->ruleset_attr_size > MAX_RULESET_ATTR) {
        PyErr_Format(PyExc_ValueError, "a ruleset attribute of %zd bytes (at most %d)", plan->ruleset_attr_size,
                     MAX_RULESET_ATTR);
        return -1;
    }
    if (plan->setpcap < 0 || plan->setpcap >= 64) {
        PyErr_Format(PyExc_ValueError, "CAP_SETPCAP numbered %d (capget reports 0-63)", plan->setpcap);
        return -1;
    }
    plan->rules = PyTuple_GET_SIZE(rules);
    plan->paths = PyMem_RawCalloc((size_t)plan->rules + 1, sizeof(*plan->paths));
    plan->rights = PyMem_RawCalloc((size_t)plan->rules + 1, sizeof(*plan->rights));
    if (!plan->paths || !plan->rights) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < plan->rules; i++) {
        PyObject *rule = PyTuple_GET_ITEM(rules, i);
        Py_ssize_t length;
        if (!PyTuple_Check(rule)) {
            PyErr_Format(PyExc_TypeError, "a rule must be a (path, rights) tuple, not %.100s", Py_TYPE(rule)->tp_name);
            return -1;
        }
        if (!PyArg_ParseTuple(rule, "y#K:rule", &plan->paths[i], &length, &plan->rights[i]))
            return -1;
        if ((Py_ssize_t)strlen(plan->paths[i]) != length) {
            PyErr_SetString(PyExc_ValueError, "a rule's path holds a NUL byte");
            return -1;
        }
    }
    return 0;
}

static void free_plan(Prelude *plan) {
    PyMem_RawFree(plan->paths);
    PyMem_RawFree(plan->rights);
}

/* serve()'s loop, its arguments read. */
static PyObject *answer_orders(const Loop *loop, const Prelude *plan) {
    static char packet[MAX_PACKET];
    for (;;) {
        struct iovec iov = {.iov_base = packet, .iov_len = sizeof(packet)};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t got = recvmsg(loop->sock, &msg, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
            Py_RETURN_NONE; /* the zygote is gone, or out of step: the forker exits */
        uint64_t id = 0;
        if (got >= ORDER_HEAD)
            memcpy(&id, packet, sizeof(id)); /* little-endian, as forker.ORDER_HEAD packs it (x86_64, aarch64) */
        if (got < ORDER_HEAD || packet[8] != ORDER_RUN)
            return Py_BuildValue("(sy#)", "order", packet, (Py_ssize_t)got);
        int child;
        Setup setup;
        Staged staged;
        int done = fork_one(loop, plan, id, &child, &setup, &staged);
        if (done == 2)
            return Py_BuildValue("(sy#iy#iiiiiii)", "child", packet, (Py_ssize_t)got, child, setup.note,
                                 setup.note_len, setup.proc, setup.shm, setup.run, setup.cgroup_ns, staged.read_only,
                                 staged.bounding, staged.ruleset);
        if (done == 0)
            return Py_BuildValue("(sy#)", "order", packet, (Py_ssize_t)got);
        if (done < 0)
            Py_RETURN_NONE;
    }
}

static PyObject *serve(PyObject *Py_UNUSED(module), PyObject *args) {
    Loop loop;
    unsigned long long tid_field;
    PyObject *plan_tuple;
    if (!PyArg_ParseTuple(args, "ikiiKilIIO!:serve", &loop.sock, &loop.flags, &loop.template_ns, &loop.host_ns,
                          &tid_field, &loop.version, &loop.zygote, &loop.uid, &loop.gid, &PyTuple_Type, &plan_tuple))
        return NULL;
    loop.tid_field = (void *)(uintptr_t)tid_field;
    Prelude plan = {0};
    PyObject *answer = read_plan(plan_tuple, &plan) == 0 ? answer_orders(&loop, &plan) : NULL;
    free_plan(&plan);
    return answer;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS,
     "serve(sock, clone_flags, template_ns, host_ns, tid_field, version, zygote, uid, gid, prelude): answer run\n"
     "orders until one needs Python.\n\n"
     "prelude: (securebits, last_cap, setpcap, ruleset_attr, ((path, rights), ...), file_rights), the steps each\n"
     "new worker takes before it returns to Python (ruleset_attr b'': no Landlock ruleset).\n"
     "Returns None once the zygote is gone; ('order', packet) for an order Python must take (then call again);\n"
     "in a new worker, its namespaces set up: ('child', packet, private_socket_fd, note, proc, shm, run,\n"
     "cgroup_ns, read_only, bounding, ruleset) (each mount 0, -1 for no such dir, or its errno; cgroup_ns,\n"
     "read_only, bounding: the step's errno or 0; ruleset: the fd of the plan's ruleset, or -1)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_forkloop", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__forkloop(void) {
    PyObject *made = PyModule_Create(&module);
    /* forker.py uses this build only if it speaks the same serve(): a build left from an older checkout does not */
    if (made && PyModule_AddIntConstant(made, "INTERFACE", 4) < 0)
        Py_CLEAR(made);
    return made;
}
