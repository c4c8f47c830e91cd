//! The test proxy as a process, for tests written in other languages (the desktop window tests):
//! `tether-test-proxy UPSTREAM_ADDR` prints `{"addr": "127.0.0.1:PORT"}` once listening, then obeys
//! one command per stdin line: `drop`, `refuse on|off`, `blackhole on|off`, `blackhole-current`.
//! Each command is answered with `ok` (or `error: ...`). It exits when stdin closes.

use std::io::BufRead;
use std::net::SocketAddr;

use tether_e2e::proxy::Proxy;

fn main() -> std::io::Result<()> {
    let upstream: SocketAddr = std::env::args()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: tether-test-proxy UPSTREAM_ADDR"))?
        .parse()
        .map_err(std::io::Error::other)?;
    let proxy = Proxy::try_start(upstream)?;
    println!(
        "{}",
        serde_json::json!({ "addr": proxy.addr().to_string() })
    );
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["drop"] => {
                proxy.drop_all();
                "ok".to_owned()
            }
            ["refuse", on @ ("on" | "off")] => {
                proxy.set_refuse(*on == "on");
                "ok".to_owned()
            }
            ["blackhole", on @ ("on" | "off")] => {
                proxy.set_blackhole(*on == "on");
                "ok".to_owned()
            }
            ["blackhole-current"] => {
                proxy.blackhole_current();
                "ok".to_owned()
            }
            [] => continue,
            _ => format!("error: unknown command {line:?}"),
        };
        println!("{reply}");
    }
    Ok(())
}
