//! The Redis protocol parser on arbitrary bytes, fed as a connection feeds it: in pieces of
//! arbitrary sizes. Never panics; a request never claims bytes it was not given; the requests
//! found do not depend on how the bytes were split; and limits hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ziggy_resp::{parse, Limits, ProtocolError, Request};

const LIMITS: Limits = Limits {
    inline_max: 64,
    args_max: 8,
    bulk_max: 32,
};

/// Parses `data` as one connection would, receiving it in `pieces`: the requests found, then
/// the error that closed it (if any).
fn drive(data: &[u8], pieces: &[usize]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    let mut fed = 0;
    let mut sizes = pieces.iter().cycle();
    while fed < data.len() {
        let size = sizes.next().copied().unwrap_or(data.len()).clamp(1, data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + size]);
        fed += size;
        loop {
            match parse(&buf, &LIMITS) {
                Ok(Some(Request { args, consumed })) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    assert!(args.len() <= LIMITS.args_max);
                    assert!(args.iter().all(|a| a.len() <= LIMITS.bulk_max.max(LIMITS.inline_max)));
                    buf.drain(..consumed);
                    requests.push(args);
                }
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    (requests, None)
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, pieces) = input;
    if data.is_empty() {
        return;
    }
    let whole = drive(&data, &[data.len()]);
    let split: Vec<usize> = pieces.iter().map(|&p| p as usize % 16 + 1).collect();
    let pieced = drive(&data, &split);
    // An error depends only on the bytes before it; a split can only show it later, never
    // differently, unless the whole input ended first (then the pieced run saw less).
    assert_eq!(whole.0, pieced.0, "the requests found depend on how the bytes arrived");
    assert_eq!(whole.1, pieced.1);
});
