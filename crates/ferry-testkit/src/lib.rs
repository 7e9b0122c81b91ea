//! Test support for ferry: real servers started on 127.0.0.1 for a test's lifetime
//! (nginx, `python3 -m http.server`, `ferry serve`, `redis-server`, `s3s-fs`), a tmpfs and an
//! ext4 image for full-disk tests, a misbehaving HTTP server for fault injection, and a relay
//! that adds a fixed round-trip time.
//! Every server is stopped by its own PID (or task) when its handle is dropped.

pub mod certs;
pub mod delay;
pub mod ext4;
pub mod fault;
pub mod ietf;
pub mod nginx;
pub mod proxy;
pub mod pyserver;
pub mod redis;
pub mod s3;
pub mod serve;
pub mod tmpfs;
pub mod tus;
pub mod util;
