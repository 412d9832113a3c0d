//! `upstream.proxy`: the upstream hop goes through an HTTP proxy by a
//! `CONNECT` tunnel. (That `HTTP_PROXY` and the like are never read is
//! hyper-util's client's own behaviour: it has no environment lookup.)

use std::sync::{Arc, Mutex};

use castari_sim::Simulator;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A CONNECT-only proxy on 127.0.0.1: records each `CONNECT` target (and
/// its `Proxy-Authorization`, if any, after a space) and tunnels it. Ends
/// with the test's runtime.
async fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut first = String::new();
                client.read_line(&mut first).await.ok()?;
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    client.read_line(&mut line).await.ok()?;
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("proxy-authorization") {
                            auth = Some(value.trim().to_string());
                        }
                    }
                }
                let target = first
                    .strip_prefix("CONNECT ")?
                    .split(' ')
                    .next()?
                    .to_string();
                let entry = match auth {
                    Some(auth) => format!("{target} {auth}"),
                    None => target.clone(),
                };
                log.lock().unwrap().push(entry);
                let mut upstream = TcpStream::connect(&target).await.ok()?;
                let mut client = client.into_inner();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .ok()?;
                tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .ok()
            });
        }
    });
    (url, seen)
}

/// Sends `GET /api/v1/auth/me` through a gateway whose upstream proxy is
/// a fresh CONNECT proxy, its URL given `userinfo` (`user:pass@` or "");
/// returns the simulator and the tunnels the proxy saw.
async fn through_proxy(userinfo: &str) -> (Simulator, Vec<String>) {
    let sim = sim().await;
    let (proxy, tunnels) = connect_proxy().await;
    let proxy = proxy.replace("http://", &format!("http://{userinfo}"));
    let proxy_url = url::Url::parse(&proxy).unwrap();
    let gw = TestGateway::start_with(&sim.url(), move |c| c.upstream.proxy = Some(proxy_url)).await;
    let response = client()
        .get(gw.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;
    let seen = tunnels.lock().unwrap().clone();
    (sim, seen)
}

#[tokio::test]
async fn the_upstream_hop_goes_through_the_configured_proxy() {
    let (sim, tunnels) = through_proxy("").await;
    let sim_authority = url::Url::parse(&sim.url()).unwrap();
    let target = format!(
        "{}:{}",
        sim_authority.host_str().unwrap(),
        sim_authority.port().unwrap()
    );
    assert_eq!(tunnels, [target], "one tunnel");
    assert_eq!(last_seen(&sim).await.path, "/api/v1/auth/me");
}

#[tokio::test]
async fn proxy_credentials_in_the_url_go_as_proxy_authorization() {
    let (_sim, seen) = through_proxy("team%40corp:s3cr%3At@").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    // base64("team@corp:s3cr:t")
    assert!(
        seen[0].ends_with(" Basic dGVhbUBjb3JwOnMzY3I6dA=="),
        "{seen:?}"
    );
}
