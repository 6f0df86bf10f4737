/* A one-shot worker's deaths by signal, as any other process has them (pid1_signals.py says why and how).
 *
 * The handler runs in signal context: only system calls, no libc state, no Python. In pid 1 of a pid namespace it
 * leaves its mark in the thread group leader's name (PR_SET_NAME names the calling thread, and the zygote reads
 * the leader's, the one a dead process keeps until reaped) and ends the process with 128 + the signal, as a shell
 * reports a death by signal. Anywhere else (a process the run forked; pid 1 only is spared by the kernel) the
 * signal's default action is put back and the signal taken again, so that process dies of it as it always did.
 *
 * SIGKILL cannot be caught: the audit hook sees a run's os.kill / os.killpg / signal.pthread_kill of SIGKILL at its
 * own pid 1 before the call, sends it to the others it names (a process group) and ends pid 1 as killed by it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MARK "signal-"  /* pid1_signals.MARK */
#define FORWARD_WAIT_NS 10000000L
#define FORWARD_WAITS 100 /* 1 s: a leader that blocks the signal never takes it */

/* SIGKILL, when a thread other than the leader sent it (on_audit): the leader's handler marks it in place of the
 * signal that woke it. */
static volatile sig_atomic_t forced;
/* The signals install() took, to wake the leader with one still ours (on_audit). */
static int taken_signals[NSIG];
static int n_taken;
static int armed;

static void end_as_killed_by(int sig) {
    char name[16] = MARK;
    size_t at = sizeof(MARK) - 1;
    if (sig >= 10)
        name[at++] = (char)('0' + sig / 10);
    name[at++] = (char)('0' + sig % 10);
    name[at] = '\0';
    prctl(PR_SET_NAME, name, 0, 0, 0);
    syscall(SYS_exit_group, 128 + sig);
}

static void wait_for_the_leader(int mark);

static void on_signal(int sig) {
    long pid = syscall(SYS_getpid);
    if (pid != 1) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        syscall(SYS_tgkill, pid, syscall(SYS_gettid), sig); /* pending until this handler returns */
        return;
    }
    int mark = forced ? forced : sig;
    if (syscall(SYS_gettid) == 1)
        end_as_killed_by(mark);
    /* Another thread of pid 1 (a fault there, a pthread_kill): the leader marks its own name. */
    syscall(SYS_tgkill, 1L, 1L, sig);
    wait_for_the_leader(mark);
}

static void wait_for_the_leader(int mark) {
    struct timespec wait = {0, FORWARD_WAIT_NS};
    for (int i = 0; i < FORWARD_WAITS; i++)
        syscall(SYS_nanosleep, &wait, NULL);
    syscall(SYS_exit_group, 128 + mark); /* the leader did not take it: the status alone says it */
}

/* A thread of pid 1 but its leader: wakes the leader with a signal whose handler is still on_signal, which marks
 * SIGKILL (forced) for it; without one, the status alone says it. */
static void end_the_leader_as_killed(void) {
    forced = SIGKILL;
    for (int i = 0; i < n_taken; i++) {
        struct sigaction now;
        if (sigaction(taken_signals[i], NULL, &now) == 0 && now.sa_handler == on_signal) {
            syscall(SYS_tgkill, 1L, 1L, taken_signals[i]);
            break;
        }
    }
    wait_for_the_leader(SIGKILL);
}

/* Whether os.kill(target, ...) reaches pid 1: 0 and -(its group) do, -1 spares the caller. os.killpg(group) reaches
 * it when the group is its own, although glibc sends that one (group 1, pid 1's own) as kill(-1). */
static int reaches_me(long target, int group_kill) {
    long group = syscall(SYS_getpgid, 0L);
    if (group_kill)
        return target == 0 || target == group;
    return target == 1 || target == 0 || (target < -1 && -target == group);
}

/* os.kill(pid, SIGKILL), os.killpg(pgid, SIGKILL), signal.pthread_kill(tid, SIGKILL) that would end pid 1, which
 * the kernel spares its own: the others it names get it now (a group's members), then pid 1 ends as killed by it. */
static int on_audit(const char *event, PyObject *args, void *unused) {
    (void)unused;
    if (!armed || (event[0] != 'o' && event[0] != 's'))
        return 0;
    int is_kill = strcmp(event, "os.kill") == 0, is_killpg = !is_kill && strcmp(event, "os.killpg") == 0;
    if (!is_kill && !is_killpg && strcmp(event, "signal.pthread_kill") != 0)
        return 0;
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != 2 || syscall(SYS_getpid) != 1)
        return 0;
    long target = PyLong_AsLong(PyTuple_GET_ITEM(args, 0)), sig = PyLong_AsLong(PyTuple_GET_ITEM(args, 1));
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* os.kill itself says what is wrong with its arguments */
        return 0;
    }
    if (sig != SIGKILL || ((is_kill || is_killpg) && !reaches_me(target, is_killpg)))
        return 0;
    if (is_killpg || (is_kill && target != 1))
        syscall(SYS_kill, is_killpg ? -target : target, SIGKILL); /* the group's other members; pid 1 is spared */
    if (syscall(SYS_gettid) == 1)
        end_as_killed_by(SIGKILL);
    end_the_leader_as_killed();
    return 0;
}

/* install(signals): for each signal whose action is the default one, this handler; returns those it took. */
static PyObject *install(PyObject *self, PyObject *signals) {
    PyObject *taken = PyList_New(0), *seq = PySequence_Fast(signals, "install() takes a sequence of signals");
    if (!taken || !seq)
        goto failed;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int sig = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (sig == -1 && PyErr_Occurred())
            goto failed;
        struct sigaction old, ours;
        if (sigaction(sig, NULL, &old) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto failed;
        }
        if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO))
            continue; /* ignored (SIGPIPE, SIGXFSZ) or caught (SIGINT): Python's, as in any interpreter */
        memset(&ours, 0, sizeof(ours));
        ours.sa_handler = on_signal;
        sigfillset(&ours.sa_mask);
        if (sigaction(sig, &ours, NULL) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto failed;
        }
        PyObject *number = PyLong_FromLong(sig);
        if (!number || PyList_Append(taken, number) < 0) {
            Py_XDECREF(number);
            goto failed;
        }
        Py_DECREF(number);
        if (n_taken < NSIG)
            taken_signals[n_taken++] = sig;
    }
    Py_DECREF(seq);
    if (!armed) {
        if (PySys_AddAuditHook(on_audit, NULL) < 0)
            goto failed;
        armed = 1;
    }
    return taken;
failed:
    Py_XDECREF(seq);
    Py_XDECREF(taken);
    return NULL;
}

static PyMethodDef methods[] = {
    {"install", install, METH_O, "install(signals) -> the signals whose default action this handler now takes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_pid1_signals", .m_size = -1,
                                    .m_methods = methods};

PyMODINIT_FUNC PyInit__pid1_signals(void) { return PyModule_Create(&module); }
