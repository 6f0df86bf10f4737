/* A one-shot worker's deaths by signal, as any other process has them (pid1_signals.py says why and how).
 *
 * The handler runs in signal context: only system calls, no libc state, no Python. In pid 1 of a pid namespace it
 * leaves its mark in the thread group leader's name (PR_SET_NAME names the calling thread, and the zygote reads
 * the leader's, the one a dead process keeps until reaped) and ends the process with 128 + the signal, as a shell
 * reports a death by signal. Anywhere else (a process the run forked; pid 1 only is spared by the kernel) the
 * signal's default action is put back and the signal taken again, so that process dies of it as it always did.
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
    if (syscall(SYS_gettid) == 1)
        end_as_killed_by(sig);
    /* Another thread of pid 1 (a fault there, a pthread_kill): the leader marks its own name. */
    syscall(SYS_tgkill, 1L, 1L, sig);
    struct timespec wait = {0, FORWARD_WAIT_NS};
    for (int i = 0; i < FORWARD_WAITS; i++)
        syscall(SYS_nanosleep, &wait, NULL);
    syscall(SYS_exit_group, 128 + sig); /* the leader did not take it: the status alone says it */
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
    }
    Py_DECREF(seq);
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
