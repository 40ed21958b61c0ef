//! The gateway's own answers and WebSocket upgrades.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn unknown_apps_get_a_plain_404() {
    let agent = spawn_agent().await;
    let response = agent
        .client
        .get(agent.gateway_url("/apps/nobody-here/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("unknown app: no app nobody-here"));
    let response = agent
        .client
        .get(agent.gateway_url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn websocket_upgrades_are_spliced_through() {
    let agent = spawn_agent().await;
    let app = app_id("ws");
    agent
        .deploy_ok(&deploy_body(&app, json!({"WS": "1"})))
        .await;

    let mut stream = TcpStream::connect(agent.gateway).await.unwrap();
    let request = format!(
        "GET /apps/{app}/socket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        agent.gateway
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "the gateway closed early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    for message in ["ping one\n", "ping two\n"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_exact(&mut echoed),
        )
        .await
        .expect("the echo arrives")
        .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
}
