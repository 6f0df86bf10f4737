"""What the seccomp layer denies, as data: the calls, and the arguments that decide (seccomp.py builds the filter).

Each item is refused with an errno (a normal ``PermissionError`` in Python; the process does not die):

- architecture check: foreign architectures (i386 through ``int 0x80``) get EPERM
  (libseccomp's bad-arch action); x32 numbers (bit 30 set) are above every known
  number, so the rule for unknown numbers below refuses them (ENOSYS);
- ``socket()`` with any family but ``AF_UNIX`` -> EPERM (a 64-bit "not equal to 1": high
  garbage bits cannot smuggle a family past, they only get a valid call refused);
- the dangerous calls of Docker's default profile (ptrace, process_vm_*, bpf,
  perf_event_open, io_uring_*, userfaultfd, keyctl/add_key/request_key, mount and
  the new mount API, umount2, pivot_root, chroot, unshare, setns, kexec_*, module
  loading, clock setting, swap, reboot, quotactl, open_by_handle_at, ...) and legacy
  calls nobody needs (modify_ldt, uselib, _sysctl, nfsservctl, lookup_dcookie, ustat,
  sysfs, vm86, ...) -> EPERM;
- ``inotify_init``/``inotify_init1`` and ``fanotify_init`` -> EPERM: the kernel counts their instances
  and watches per user across user namespaces (``fs.inotify.max_user_instances``, 128 by default), so
  a run holding them all left the host's own user, root included, unable to make one while it lived
  (a session's state holds them between runs);
- ``io_setup`` -> EPERM: Linux AIO contexts come from one pool for the whole machine (``fs.aio-max-nr``,
  65,536 events), which one run could take whole (16 contexts), failing every process's ``io_setup`` (databases'
  native AIO) while it lived;
- ``clone`` with a namespace flag -> EPERM; ``clone3`` -> ENOSYS always (its flags live
  in memory a filter cannot read, so glibc falls back to ``clone`` where they can be
  checked; threads keep working);
- ``ioctl(TIOCSTI)`` / ``ioctl(TIOCLINUX)`` (typing into a terminal) -> EPERM;
- ``fcntl(F_SETPIPE_SZ)`` above a new pipe's 16 pages -> EPERM: the kernel counts pipe buffers per user across
  namespaces, and once a user holds ``fs.pipe-user-pages-soft`` (64 MiB) every new pipe of that user gets 2
  pages. One run growing its pipes to 1 MiB took all of it, and an unprivileged host's every pipe (other
  runs' streams included) was 8 KiB for as long as the run or its session lived. At 16 pages it takes eight
  processes with full fd tables (subprocesses, or eight session states) to get there;
- ``fcntl(F_SETLEASE)`` -> EPERM: the kernel lets a file's owner take a lease from a read-only fd, and a run's uid
  owns much of what it may only read (as root the interpreter and ``/etc/passwd``; unprivileged, the user's venv and
  ``read_only_paths``; under a user namespace whatever maps to its root), which Landlock does not look at. A run's
  read lease made the host's open of such a file for writing wait, its write lease (a read-only fd may take one
  where nobody else has the file open) every open, up to ``fs.lease-break-time`` (45 s) each, for as long as the
  run or its session's state held it (``F_GETLEASE`` still answers: none);
- ``fadvise64`` with ``POSIX_FADV_DONTNEED`` and ``madvise`` with ``MADV_PAGEOUT`` -> EPERM: both drop a file's
  pages from the page cache, which is the whole machine's, for any file the run may only read (the interpreter, the
  image, ``/usr``): nothing charges the re-reads to the run. A run that advised DONTNEED on every file of the venv and
  the interpreter's tree dropped nine tenths of their cached pages (all but what some process maps), and while it
  looped, a host process's ``import pandas, matplotlib, scipy, sklearn, statsmodels`` took 5.0 s instead of 2.2 s:
  every process reading those files (the host, other runs, a zygote starting) read them from disk again, at the
  rate the run dropped them. (Its own pages and its tmpfs files it can drop by unmapping or deleting them);
- ``memfd_secret`` -> EPERM: the kernel takes each page of a secret memfd out of its own direct map of all memory,
  splitting the 1 GiB and 2 MiB mappings it lies in into 4 KiB ones, and nothing merges them back when it is freed:
  one 0.1 s run of 8 processes, each taking some 250 secret pages (until its fds ran out), split a third of this
  machine's 1 GiB mappings for good (``DirectMap1G`` 24 GiB -> 16 GiB, ``direct_map_level3_splits`` 0 -> 8, no
  collapse since), every kernel access to that memory costing more TLB entries until the host reboots, and each
  run may split more. (Why Linux had it off by default at first, ``secretmem.enable``; a memory cgroup charges the
  pages but cannot undo a split);
- ``prctl(PR_FUTEX_HASH)`` -> EPERM: its ``PR_FUTEX_HASH_SET_SLOTS`` (Linux 6.16) gives the process a private futex
  hash of up to 2^24 slots, about 1 GiB of vmalloc'd kernel memory, outside RLIMIT_AS and charged to a memory
  cgroup only where there is one: without one, one process of a run held 970 MiB that no limit of the run saw (its
  ``peak_memory_bytes`` said 16 MiB), and ``default``'s 64 processes may hold 64 GiB. The kernel sizes the hash it
  makes itself (at a process's first thread) by the CPUs; nothing a snippet runs asks for another;
- huge pages of the machine's hugetlb pool (``vm.nr_hugepages``, what a database or a VM host reserves): ``mmap``
  with ``MAP_HUGETLB``, ``memfd_create`` with ``MFD_HUGETLB`` and ``shmget`` with ``SHM_HUGETLB`` -> EPERM. The pool
  is one for the machine, no memory cgroup charges it (cgroup v1; v2 only when mounted with
  ``memory_hugetlb_accounting``), and any process may map its pages (a run's gid 0 passes ``shmget``'s
  ``vm.hugetlb_shm_group`` check as well): a run under ``strict`` took all of it, and every other process's
  ``MAP_HUGETLB`` failed ENOMEM for as long as the run or its session's state lived. (Transparent huge pages are
  ordinary memory: untouched);
- a seccomp filter of the run's own (``seccomp`` with ``SECCOMP_SET_MODE_STRICT`` or ``SECCOMP_SET_MODE_FILTER``,
  ``prctl(PR_SET_SECCOMP)``) -> EPERM: a filter's ``SECCOMP_RET_LOG`` (and its kill actions, and any action under
  ``SECCOMP_FILTER_FLAG_LOG``) makes an audit record of each call it matches, wherever audit is on (auditd), and its
  actions live in memory a filter cannot read. The audit queue is one for the whole machine: a run's filter logging
  ``getppid`` made one record per call, at the rate of the calls, and the kernel drops everyone's records past
  its backlog (auditd would write the rest to the host's disk). A session's first state still adds its
  notifying filter (state_scope.py: ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` alone, which the kernel refuses (EBUSY)
  to any process below a filter with a listener: every run of a session);
- ``personality`` with ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC or the other address
  layout flags -> EPERM;
- in a session worker (``keep_fork``): ``kill(-1, ...)`` -> EPERM. The states of one
  session share uid and Landlock domain; a broadcast signal from a run would end every
  checkpoint and branch (and the root). A run signals its own process group instead.
  Likewise in a worker that shares the host's pid namespace, where it would reach every
  process of the uid that no Landlock domain keeps out (signal_scope.py);
- with ``allow_subprocess = false``: ``execve``, ``execveat``, ``fork``, ``vfork`` and
  ``clone`` without ``CLONE_THREAD`` -> EPERM (threads still work);
- in a worker without a memory cgroup (memcg.py): ``memfd_create`` and
  ``shmget`` -> EPERM, since the memory they hold is outside RLIMIT_AS and nothing else
  would bound it (with a memory cgroup it is charged there, and they are allowed); and ``semget`` and ``msgget``:
  a System V semaphore array and a message queue's messages are kernel memory that only a memory cgroup charges,
  and the run's IPC namespace allows 32,000 arrays of 32,000 semaphores (2 MiB each) and 32,000 queues of 16 KiB:
  without one, a run made 100 arrays in 1.3 s, 200 MiB of unreclaimable slab outside every limit of the run, and
  could go on to 64 GiB (and 512 MiB of messages), its session's state keeping them between runs;
- in a worker without an IPC namespace of its own (no namespaces layer): System V shared memory, message queues
  and semaphores and POSIX message queues -> EPERM. Those of the host's IPC namespace are named by small ids a
  run can guess: as the host's uid it attached the host's own segments (PostgreSQL's, X11's) and read them, and
  what it made outlived the run, its memory held by nobody and read by the next run;
- in a worker without a mount namespace of its own (no namespaces): ``connect`` and unix datagram sockets
  (:data:`HOST_TREE_SOCKET_RULES`): a run reached the host's pathname sockets, a user's D-Bus session bus among them;
  and a mode with a setuid, setgid, group- or other-write bit, a new file's with a setuid or setgid one, and extended
  attributes (:data:`HOST_TREE_METADATA_RULES`): a run changed the mode of host files its uid owns, as root making one
  setuid root;
- in a worker in the host's network namespace (no namespaces, and no empty one its forker shares: an unprivileged
  uid without user namespaces): ``bind`` -> EPERM. The abstract unix names there are the host's: a run held the
  name a host service binds (the service then failed with EADDRINUSE) and would take its clients' connections
  (pathname sockets in the work dir are refused alike: seccomp cannot tell the two apart);
- in a worker that shares the host's pid namespace too (the same case: its clone made no namespaces), the calls
  that change another process's limits or scheduling by pid (``prlimit64`` with a new limit,
  ``sched_setaffinity``, ``sched_setscheduler``, ``sched_setparam``, ``sched_setattr``) or another's or a uid's
  priority (``setpriority``, ``ioprio_set``) -> EPERM; on the caller itself (pid 0) they go on. The kernel lets a
  process of the same uid make them, and Landlock does not scope them: a run read the host's pid in ``/proc``
  and set the host's ``RLIMIT_NOFILE`` to 5 (its next run failed with EMFILE), pinned it to one CPU, niced it
  to 19, made it ``SCHED_IDLE``, and could do the same to the zygote and concurrent runs. (A session's states
  are supervised by state_scope.py as well);
- every native system call number the filter does not know -> ENOSYS: above the
  highest one it knows and in the unassigned ranges below it. "Knows" means named in
  libseccomp's table *and* not above :data:`REVIEWED_MAX`, the highest number these
  lists were reviewed against. A call newer than the lists (or than libseccomp) is
  thus refused, never let through; ENOSYS rather than EPERM (runc answers calls newer
  than its profile the same way) lets libraries fall back as on an older kernel.
  (The kernel itself lets ``uretprobe`` and ``uprobe`` past every filter: only its
  own trampolines may call them.)

"""

from __future__ import annotations

import os

from . import _sys

AF_UNIX = 1
SOCK_TYPE_MASK = 0xF  # socket()'s type, without SOCK_NONBLOCK and SOCK_CLOEXEC
CLONE_NS_FLAGS = (_sys.CLONE_NEWNS, _sys.CLONE_NEWCGROUP, _sys.CLONE_NEWUTS, _sys.CLONE_NEWIPC, _sys.CLONE_NEWUSER,
                   _sys.CLONE_NEWPID, _sys.CLONE_NEWNET)
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
F_SETPIPE_SZ = 1031
F_SETLEASE = 1024
#: Advice that drops a file's pages from the machine's page cache (fadvise64's and madvise's).
POSIX_FADV_DONTNEED, MADV_PAGEOUT = 4, 21
#: The flags that take pages from the machine's hugetlb pool (mmap's, memfd_create's, shmget's).
MAP_HUGETLB, MFD_HUGETLB, SHM_HUGETLB = 0x40000, 0x4, 0o4000
SET_MODE_STRICT, PR_SET_SECCOMP, PR_FUTEX_HASH = 0, 22, 78
#: The only flags a session's filter may be added with: its notifying filter (state_scope.py).
NEW_LISTENER = 1 << 3
#: A new pipe's buffer (16 pages): ``F_SETPIPE_SZ`` may shrink a pipe, not grow it past this.
PIPE_DEFAULT_BYTES = 16 * os.sysconf("SC_PAGE_SIZE")
PERSONALITY_FLAGS = (0x0040000, 0x0100000, 0x0200000, 0x0400000, 0x0800000, 0x8000000)
#: fcntl's and ioctl's commands (and kill's pid) are 32 bits: the kernel ignores the rest of the register.
LOW_32_BITS = 0xFFFFFFFF

#: Denied with EPERM in every policy (Docker's default-deny list, legacy calls nobody needs, a few newer calls).
DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "settimeofday", "create_module",
    "delete_module", "finit_module", "init_module", "get_kernel_syms", "query_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "request_key", "lookup_dcookie", "mount",
    "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at", "nfsservctl",
    "perf_event_open", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "ptrace",
    "quotactl", "quotactl_fd", "reboot", "setns", "unshare", "swapon", "swapoff", "sysfs", "_sysctl", "uselib",
    "userfaultfd", "ustat", "vhangup", "io_uring_setup", "io_uring_enter", "io_uring_register", "syslog",
    "fanotify_init", "inotify_init", "inotify_init1", "io_setup", "mbind", "set_mempolicy", "move_pages",
    "migrate_pages", "memfd_secret", "sethostname",
    "setdomainname", "vm86", "vm86old", "modify_ldt", "lsm_set_self_attr",
)
#: Denied too in a worker without a memory cgroup: memory no mapping holds, outside RLIMIT_AS (see memcg.py), and
#: kernel memory nothing but a memory cgroup bounds (System V semaphore arrays, message queues).
SHMEM_SYSCALLS = ("memfd_create", "shmget", "semget", "msgget")
#: Denied too in a worker that shares the host's IPC namespace: every call that makes or reaches an object of it
#: (``shmdt`` only detaches what was attached).
HOST_IPC_SYSCALLS = ("shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
                     "semtimedop", "semctl", "mq_open", "mq_unlink")
#: Denied too in a worker that shares the host's pid namespace: (call, conditions on its arguments, all of which
#: hold): the calls that act on another process named by pid (0: the caller), or on a whole uid. A pid is 32 bits,
#: but NE compares all 64: a value the kernel would read as 0 with garbage above is refused, never let by.
HOST_PID_RULES = (("prlimit64", ((0, "NE", 0), (2, "NE", 0))),  # reading another's limits (new == NULL) goes on
                  ("sched_setaffinity", ((0, "NE", 0),)), ("sched_setscheduler", ((0, "NE", 0),)),
                  ("sched_setparam", ((0, "NE", 0),)), ("sched_setattr", ((0, "NE", 0),)),
                  ("setpriority", ((0, "NE", 0),)), ("setpriority", ((1, "NE", 0),)),  # only PRIO_PROCESS, 0
                  ("ioprio_set", ((0, "NE", 1),)), ("ioprio_set", ((1, "NE", 0),)))  # only IOPRIO_WHO_PROCESS, 0
#: Denied too in a worker in the host's network namespace (an unprivileged uid without namespaces: no namespace of
#: its own, and no shared empty one, netns.py): the abstract unix names there are the host's, and any process may
#: bind a free one. A run bound the name a host service listens on (its bind then failed EADDRINUSE while the run or
#: its session lived) and would take the connections host clients meant for it (Landlock scopes a run's connects,
#: not connects into it). bind is one call for abstract and pathname names alike: both are refused.
HOST_NETWORK_SYSCALLS = ("bind",)
#: Denied too in a worker without a mount namespace of its own (its clone made none: the host's whole tree is
#: visible): ``connect``, and unix datagram sockets (``socket``/``socketpair`` of ``SOCK_DGRAM``, or ``SOCK_RAW``,
#: which the kernel makes a datagram one), whose ``sendto``/``sendmsg`` may name any address. Landlock has no rule
#: for reaching a pathname socket: a run connected to the host's, e.g. a user's D-Bus session bus
#: (``/run/user/UID/bus``), through which systemd starts any command outside the sandbox. No run can make a
#: socket to connect to there either (its ``bind`` is refused where the network namespace is the host's); pairs
#: of connected sockets (``socketpair`` of streams, what multiprocessing uses) still work.
HOST_TREE_SOCKET_RULES = (("connect", ()),) + tuple(
    (call, ((1, "MASKED_EQ", SOCK_TYPE_MASK, kind),)) for call in ("socket", "socketpair") for kind in (2, 3))
#: Denied too there: a mode with a setuid, setgid, group- or other-write bit (the ``chmod`` family, the mode's
#: argument by call), and setting or removing extended attributes (ACLs grant what a mode does). Landlock has no rule
#: for a file's metadata, and the kernel lets a file's owner change it: a run without a mount namespace reached every
#: host file its uid owns by path; as root it made a root-owned file setuid root, and could make ``/etc/passwd``
#: writable to all. A run's own files keep ``chmod`` to the usual modes (``shutil.copy``'s copy of one, ``0o755``);
#: ``shutil.copy2`` skips the attributes it may not copy.
#: A new file's mode may not carry the setuid or setgid bit there either (``open``'s mode, ignored without
#: ``O_CREAT``, is 0o666 or 0o777 in practice; ``openat2`` passes it in a struct: refused there, nobody needs it): as
#: root, a run's own dirs (which it may open to others) are the host's too.
_SET_ID_BITS = (0o4000, 0o2000)
_ESCALATING_MODE_BITS = _SET_ID_BITS + (0o0020, 0o0002)  # and group- or other-write
HOST_TREE_METADATA_RULES = tuple(
    (call, ((mode_arg, "MASKED_EQ", bit, bit),))
    for call, mode_arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2))
    for bit in _ESCALATING_MODE_BITS) + tuple(
    (call, ((mode_arg, "MASKED_EQ", bit, bit),))
    for call, mode_arg in (("open", 2), ("openat", 3), ("creat", 1), ("mknod", 1), ("mknodat", 2))
    for bit in _SET_ID_BITS) + tuple(
    (call, ()) for call in ("openat2", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
                            "removexattr", "lremovexattr", "fremovexattr", "removexattrat"))
#: Denied too in a one-shot worker without a cpu cgroup: where the scheduler groups processes by kernel session
#: (autogroup), each new session would be a share of the CPU of its own (see cpushare.py). The worker leads its
#: own session already; a session's states each make one, so their filter keeps it.
SETSID_SYSCALLS = ("setsid",)
#: Denied too when ``confinement.allow_subprocess`` is false.
EXEC_SYSCALLS = ("execve", "execveat")
FORK_SYSCALLS = ("fork", "vfork")

#: The highest system call number these lists were reviewed against (Linux 6.18: file_setattr). Since
#: Linux 5.1 (424) new calls get the same number on every architecture, so one bound serves them all.
REVIEWED_MAX = 469
#: Denied calls newer than some libseccomp releases, by their (common) number: where libseccomp does not
#: know one, the ENOSYS rule for unknown numbers refuses it (checked when the filter is built).
RECENT = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
          "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
          "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443,
          "memfd_secret": 447, "fchmodat2": 452, "lsm_set_self_attr": 460, "setxattrat": 463, "removexattrat": 466,
          "open_tree_attr": 467}
#: Denied calls that do not exist on an architecture (libseccomp knows them only elsewhere): nothing to deny.
ABSENT = {
    "x86_64": frozenset({"vm86", "vm86old"}),  # i386 only (and i386 is refused by the architecture check)
    "aarch64": frozenset({"_sysctl", "chmod", "creat", "mknod", "open", "create_module", "fork", "get_kernel_syms",
                          "inotify_init",  # never in
                          "ioperm", "iopl", "modify_ldt", "query_module", "sysfs", "uselib", "ustat",  # asm-generic
                          "vfork", "vm86", "vm86old"}),
}
#: libseccomp's architecture token (the kernel's AUDIT_ARCH_*) -> our name for it.
ARCHES = {0xC000003E: "x86_64", 0xC00000B7: "aarch64"}
