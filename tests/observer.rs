//! An observer (the inspector) and a handle of the same process share one mapping of the
//! sidecar. Its own test binary: the test point is armed from the environment once per process.

mod scratch;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use tshm::{Coordinator, Options, Role};

#[test]
fn handle_opening_while_an_observer_maps_the_sidecar_can_write() {
    let dir = scratch::dir("tshm-obs");
    let p = dir.join("obs.db");
    std::fs::write(&p, b"").unwrap(); // the observer wants a database beside the sidecar
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    // armed before the first libtshm call, which reads the arming
    std::env::set_var("TSHM_TEST_PAUSE_AT", "observe_mapped");
    std::env::set_var("TSHM_TEST_PAUSE_FD", theirs.as_raw_fd().to_string());
    drop(Coordinator::open(&p, &Options::default()).unwrap());
    std::thread::scope(|s| {
        // The observer maps the sidecar first (nobody else has it open) and stops there.
        let obs = s.spawn(|| tshm::inspect::observe(&p).map(|_| ()));
        let mut line = String::new();
        BufReader::new(&ours).read_line(&mut line).unwrap();
        assert_eq!(line, "observe_mapped\n");
        // A handle opening now joins the observer's node and writes its instance record.
        let c = Coordinator::open(&p, &Options::default()).unwrap();
        c.acquire(Role::Writer, 0).unwrap();
        c.release(Role::Writer).unwrap();
        c.close(|_| {}).unwrap();
        ours.write_all(&[1]).unwrap();
        obs.join().unwrap().unwrap();
    });
}
