//! Test support for ferry: real servers started on 127.0.0.1 for a test's lifetime
//! (nginx, `python3 -m http.server`, `ferry serve`, `redis-server`, `s3s-fs`), a tmpfs for full-disk tests, and a misbehaving HTTP server for fault injection.
//! Every server is stopped by its own PID (or task) when its handle is dropped.

pub mod certs;
pub mod fault;
pub mod nginx;
pub mod proxy;
pub mod pyserver;
pub mod redis;
pub mod s3;
pub mod serve;
pub mod tmpfs;
pub mod tus;
pub mod util;
