//! End-to-end suites for Wardengate live in `tests/`; the shared harness is
//! [`wardengate_testkit`], re-exported here for convenience.

pub use wardengate_testkit as testkit;
