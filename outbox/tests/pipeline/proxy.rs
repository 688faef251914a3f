//! A TCP proxy in front of RabbitMQ that can cut its connections after a
//! number of bytes: a broker connection failing mid-batch, on demand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UNARMED: i64 = i64::MAX;

pub(crate) struct Proxy {
    addr: SocketAddr,
    budget: Arc<AtomicI64>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = Arc::new(AtomicI64::new(UNARMED));
        let shared = budget.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, shared.clone()));
            }
        });
        Proxy { addr, budget }
    }

    pub(crate) fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// The connection carrying the next `bytes` bytes towards the broker is
    /// cut there; connections made afterwards work normally.
    pub(crate) fn cut_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }
}

async fn forward(client: TcpStream, server: TcpStream, budget: Arc<AtomicI64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let left = budget.fetch_sub(n as i64, Ordering::SeqCst);
            if left != UNARMED && left - (n as i64) < 0 {
                budget.store(UNARMED, Ordering::SeqCst);
                return;
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    // Whichever direction ends first ends the connection, as a cut cable would.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
