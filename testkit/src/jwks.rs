//! An issuer's JWKS endpoint for the tests of key rotation and of an
//! issuer that goes away: a plain HTTP server on loopback that answers
//! every request with the document it holds now, counts the fetches, and
//! can be stopped (its port then refuses connections).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct JwksServer {
    pub url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    serving: JoinHandle<()>,
}

impl JwksServer {
    /// Serves `document` at `http://127.0.0.1:<port>/jwks`.
    pub async fn start(document: &serde_json::Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}/jwks", listener.local_addr().expect("an address"));
        let document = Arc::new(Mutex::new(document.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let serving = tokio::spawn({
            let (document, fetches) = (document.clone(), fetches.clone());
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = document.lock().expect("the document").clone();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            }
        });
        JwksServer {
            url,
            document,
            fetches,
            serving,
        }
    }

    /// Serves `document` from now on (a rotation at the issuer).
    pub fn set(&self, document: &serde_json::Value) {
        *self.document.lock().expect("the document") = document.to_string();
    }

    /// How many times the keys were fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The issuer goes away: its port refuses connections from now on.
    pub fn stop(&self) {
        self.serving.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
