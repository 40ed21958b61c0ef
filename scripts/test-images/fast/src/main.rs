//! Answers every request on 0.0.0.0:8080 with `MSG` (default `hello`), keeping connections
//! alive: an upstream that costs little, so a benchmark measures the proxy in front of it.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let body = Bytes::from(format!("{}\n", std::env::var("MSG").unwrap_or_else(|_| "hello".into())));
    let listener = TcpListener::bind("0.0.0.0:8080").await?;
    println!("bench upstream listening on 0.0.0.0:8080");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
