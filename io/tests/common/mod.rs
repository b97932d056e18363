//! What the server's TCP tests share: a server on a loopback port, raw exchanges, error texts.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use redis::Value;
use ziggy_io::server::{start, Running, ServeOptions};

pub struct Server {
    pub runtime: tokio::runtime::Runtime,
    pub running: Option<Running>,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, None)
    }

    pub fn start_with(data: &Path, requirepass: Option<&str>) -> Server {
        let mut options = ServeOptions::new(data.to_path_buf());
        options.port = 0;
        options.requirepass = requirepass.map(str::to_string);
        Server::start_options(options)
    }

    pub fn start_options(options: ServeOptions) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = runtime.block_on(start(options)).expect("the server starts");
        Server {
            runtime,
            running: Some(running),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.running.as_ref().unwrap().addr)
    }

    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A raw connection, for replies' exact bytes.
    pub fn raw(&self) -> TcpStream {
        let stream = TcpStream::connect(self.running.as_ref().unwrap().addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    pub fn stop(mut self) {
        self.running.take().unwrap().stop().expect("a clean stop");
        drop(self.runtime);
    }
}

pub fn error_text(result: redis::RedisResult<Value>) -> String {
    let error = result.expect_err("an error reply");
    let code = error.code().unwrap_or("").to_string();
    let detail = error.detail().unwrap_or("").to_string();
    format!("{code} {detail}").trim().to_string()
}

/// Sends `request` and checks that the server answers exactly `expected`.
pub fn exchange(stream: &mut TcpStream, request: &str, expected: &str) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < expected.len() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), expected, "for {request:?}");
}

/// A GET of `path` on the HTTP port: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    (code, response.split("\r\n\r\n").nth(1).unwrap().to_string())
}
