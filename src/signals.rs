//! Synchronous signal handling: the shutdown signals are blocked in every thread and
//! collected by one `sigwait` on the main thread, so no code runs in a signal handler.

use std::mem::MaybeUninit;

/// A set of signals, blocked in the calling thread and every thread it starts afterwards.
pub struct SignalSet(libc::sigset_t);

/// Block `signals` in the calling thread (and so in threads spawned later).
pub fn block(signals: &[libc::c_int]) -> SignalSet {
    // SAFETY: sigemptyset initializes the set; sigaddset/pthread_sigmask get valid
    // pointers to it. They fail only for invalid signal numbers, which callers don't pass.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        SignalSet(set)
    }
}

/// Wait for one of the signals of `set` and return its number.
pub fn wait(set: &SignalSet) -> libc::c_int {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: both pointers are valid for the call.
        let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

/// A signal's conventional name, for log lines.
pub fn name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}
