//! Real traffic for the demo and the data-plane benchmark: a tiny HTTP/1.1 backend, a
//! client that keeps its connection open between requests, and a free TCP port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// Starts an HTTP/1.1 backend on 127.0.0.1 that answers every request on a connection
/// with `200 OK` and `body`, until the client closes. Returns its port.
pub fn http_backend(body: String) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("backend: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("backend: {e}"))?
        .port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || serve(conn, &body));
        }
    });
    Ok(port)
}

fn serve(conn: TcpStream, body: &str) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        // A request: lines up to the empty one (no request body is expected).
        let mut saw_request = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => saw_request = true,
            }
        }
        if !saw_request {
            continue;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// An HTTP client connection kept open between requests.
pub struct Client {
    conn: TcpStream,
}

impl Client {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> Result<Self, String> {
        let conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        Ok(Self { conn })
    }

    /// `GET /` on this connection; the body of the answer.
    pub fn get(&mut self) -> Result<String, String> {
        self.conn
            .write_all(b"GET / HTTP/1.1\r\nhost: demo\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match self.conn.read(&mut byte) {
                Ok(0) => return Err("connection closed before an answer".into()),
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or("an answer without content-length")?;
        let mut body = vec![0u8; len];
        self.conn.read_exact(&mut body).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Closes the connection (a FIN).
    pub fn close(self) {
        let _ = self.conn.shutdown(Shutdown::Both);
    }
}

/// One `GET /` on a new connection.
pub fn get_once(port: u16) -> Result<String, String> {
    let mut client = Client::connect(port)?;
    let body = client.get();
    client.close();
    body
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free TCP port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_answers_several_requests_on_one_connection() {
        let port = http_backend("hello".into()).expect("backend");
        let mut client = Client::connect(port).expect("connect");
        assert_eq!(client.get().expect("first"), "hello");
        assert_eq!(client.get().expect("second"), "hello");
        client.close();
        assert_eq!(get_once(port).expect("new connection"), "hello");
    }
}
