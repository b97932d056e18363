//! Client sessions over a real data file: a retry from a client whose session was evicted is
//! refused, never applied a second time (issue 10, defect 1).

use ziggy_core::wal::batch::RequestId;
use ziggy_core::{Config, KvStateMachine, RequestError};
use ziggy_io::driver::{Driver, DriverError};
use ziggy_io::format::format;

fn put(driver: &mut Driver, id: RequestId, key: &[u8], value: &[u8]) -> Result<u64, DriverError> {
    let body = KvStateMachine::put_body(key, value);
    driver
        .call(id, KvStateMachine::PUT, &body)
        .map(|(index, _)| index)
}

fn id(client: u64, session: u64, request: u64) -> RequestId {
    RequestId {
        client,
        session,
        request,
    }
}

#[test]
fn a_retry_from_an_evicted_session_is_refused_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = dir.path().join("replica.data");
    format(&path, &config, 7, false).unwrap();
    let mut driver = Driver::open(&path, &config).unwrap();

    // Client 1 writes k = "first"; its reply is lost (the test simply retries below).
    let first = driver.register(1).unwrap();
    let applied_at = put(&mut driver, id(1, first, 1), b"k", b"first").unwrap();
    // A retry while the session lives is answered from it, at the same index.
    assert_eq!(
        put(&mut driver, id(1, first, 1), b"k", b"first").unwrap(),
        applied_at
    );
    // Another client overwrites k, then as many clients as the table holds register: client 1,
    // the least recently used, is evicted.
    let other = driver.register(2).unwrap();
    put(&mut driver, id(2, other, 1), b"k", b"second").unwrap();
    for client in 3..3 + config.clients_max as u64 {
        driver.register(client).unwrap();
    }
    let marks = driver.replica().marks();
    assert!(marks.count(ziggy_core::marks::Mark::SessionEviction) >= 2);

    // Client 1 retries its applied request: refused as evicted, and k keeps the later write.
    match put(&mut driver, id(1, first, 1), b"k", b"first") {
        Err(DriverError::Request(RequestError::Evicted)) => {}
        other => panic!("the retry of an evicted session got {other:?}"),
    }
    assert_eq!(driver.get(b"k").unwrap(), Some(b"second".to_vec()));
    // So is a new request of the evicted session.
    assert!(matches!(
        put(&mut driver, id(1, first, 2), b"k", b"third"),
        Err(DriverError::Request(RequestError::Evicted))
    ));
    // Registering again gives client 1 a new session, in which it writes again.
    let again = driver.register(1).unwrap();
    assert!(again > first);
    put(&mut driver, id(1, again, 2), b"k", b"third").unwrap();
    assert_eq!(driver.get(b"k").unwrap(), Some(b"third".to_vec()));
    // ... and the old session stays refused, after a reopen too.
    drop(driver);
    let mut driver = Driver::open(&path, &config).unwrap();
    match put(&mut driver, id(1, first, 1), b"k", b"first") {
        Err(DriverError::Request(RequestError::Evicted)) => {}
        other => panic!("after a reopen, the retry of an evicted session got {other:?}"),
    }
    assert_eq!(driver.get(b"k").unwrap(), Some(b"third".to_vec()));
}

#[test]
fn writes_need_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = dir.path().join("replica.data");
    format(&path, &config, 7, false).unwrap();
    let mut driver = Driver::open(&path, &config).unwrap();
    match put(&mut driver, id(9, 0, 1), b"k", b"v") {
        Err(DriverError::Request(RequestError::Invalid(_))) => {}
        other => panic!("a write without a session got {other:?}"),
    }
    assert_eq!(driver.get(b"k").unwrap(), None);
}
