//! The `wgctl` commands of the terminating SSH mode: `wgctl ssh TARGET [-- COMMAND…]` (the
//! stock `ssh` with a short-lived login certificate for an ephemeral key), `wgctl ssh-ca` (the
//! user CA line for targets' `TrustedUserCAKeys`), and the cast player behind `wgctl
//! recordings play` and `wgctl sessions watch` (a live session, as it happens).

use std::io::Write;
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use crate::client::{Client, ClientError};
use crate::wire::{SshCertificate, SshCertificateRequest};

impl Client {
    /// `POST /v1/ssh/certificates`: a login certificate for `public_key`.
    pub async fn ssh_certificate(&self, public_key: &str) -> Result<SshCertificate, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/ssh/certificates",
            Some(&SshCertificateRequest {
                public_key: public_key.to_string(),
            }),
        )
        .await
    }

    /// `GET /v1/ssh/ca.pub`: the SSH user CA as one `TrustedUserCAKeys` line.
    pub async fn ssh_ca(&self) -> Result<String, ClientError> {
        self.get_text("/v1/ssh/ca.pub").await
    }

    /// `GET /v1/recordings/{id}/cast`: a terminated SSH session's asciicast v2 recording.
    pub async fn recording_cast(&self, id: &str) -> Result<bytes::Bytes, ClientError> {
        self.get_bytes(&format!(
            "/v1/recordings/{}/cast",
            crate::client::segment(id)
        ))
        .await
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |e| ClientError::from(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Runs the stock `ssh` (`ssh_bin`) to `target` through the terminating SSH front end at
/// `host` with a fresh key and certificate, and returns its exit code. The key never leaves a
/// private temporary directory, removed afterwards.
pub async fn ssh(
    client: &Client,
    host: &str,
    port: Option<u16>,
    ssh_bin: &str,
    target: &str,
    extra: &[String],
    command: &[String],
) -> Result<i32, ClientError> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| io("generating a key")(std::io::Error::other(e.to_string())))?;
    let public = crate::ssh::keys::public_line(key.public_key());
    let cert = client.ssh_certificate(&public).await?;
    let port = port.unwrap_or(cert.ssh_port);
    let dir = std::env::temp_dir().join(format!("wgctl-ssh-{}", uuid::Uuid::new_v4()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating the key directory"))?;
    }
    let result = async {
        let id = dir.join("id");
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| io("encoding the key")(std::io::Error::other(e.to_string())))?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&id)
                .map_err(io("writing the key"))?;
            f.write_all(pem.as_bytes()).map_err(io("writing the key"))?;
        }
        let cert_file = dir.join("id-cert.pub");
        std::fs::write(&cert_file, format!("{}\n", cert.certificate))
            .map_err(io("writing the certificate"))?;
        let known = dir.join("known_hosts");
        let host_pattern = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        std::fs::write(&known, format!("{host_pattern} {}\n", cert.host_key))
            .map_err(io("writing known_hosts"))?;
        let mut cmd = std::process::Command::new(ssh_bin);
        cmd.arg("-i")
            .arg(&id)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert_file.display()))
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .args(["-p", &port.to_string()])
            .args(extra)
            .arg(format!("{}:{target}@{host}", cert.user));
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        let status = tokio::task::spawn_blocking(move || cmd.status())
            .await
            .map_err(|e| io("running ssh")(std::io::Error::other(e.to_string())))?
            .map_err(io("running ssh"))?;
        Ok::<_, ClientError>(status.code().unwrap_or(255))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One event of a cast.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    /// Seconds since the start.
    pub at: f64,
    /// `o`, `i`, `r`, `m`, or `b` (raw bytes of a binary exec stream, not shown).
    pub code: String,
    /// The data.
    pub data: String,
}

/// Parses a cast's event lines (the header line and anything unparsable are skipped).
pub fn parse_cast(text: &str) -> Vec<CastEvent> {
    text.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .map(|(at, code, data)| CastEvent { at, code, data })
        .collect()
}

/// When each event is shown, in seconds from the start of playback: gaps divided by `speed`,
/// then capped at `idle_limit`.
pub fn schedule(events: &[CastEvent], speed: f64, idle_limit: Option<f64>) -> Vec<f64> {
    let speed = if speed > 0.0 { speed } else { 1.0 };
    let mut out = Vec::with_capacity(events.len());
    let (mut prev, mut t) = (0.0f64, 0.0f64);
    for e in events {
        let mut gap = ((e.at - prev).max(0.0)) / speed;
        if let Some(l) = idle_limit {
            gap = gap.min(l);
        }
        t += gap;
        prev = e.at;
        out.push(t);
    }
    out
}

/// Shows one cast event on this terminal: output to `out`, markers to stderr (the one output
/// path of playback and live watching).
fn show(out: &mut impl Write, code: &str, data: &str) -> Result<(), ClientError> {
    match code {
        "o" => {
            out.write_all(data.as_bytes()).map_err(io("writing"))?;
            out.flush().map_err(io("writing"))?;
        }
        "m" => eprintln!("\r\n# {data}\r"),
        _ => {}
    }
    Ok(())
}

/// Plays a cast on this terminal: output events to stdout in time, markers to stderr.
pub async fn play(cast: &str, speed: f64, idle_limit: Option<f64>) -> Result<(), ClientError> {
    let events = parse_cast(cast);
    let times = schedule(&events, speed, idle_limit);
    let start = tokio::time::Instant::now();
    let mut stdout = std::io::stdout();
    for (e, t) in events.iter().zip(times) {
        tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
        show(&mut stdout, &e.code, &e.data)?;
    }
    Ok(())
}

/// Follows live session `id` (`wgctl sessions watch ID`): its output on stdout as it happens,
/// markers and the end (why the session ended) on stderr. Ctrl-C leaves watching; the session
/// goes on. Returns the session's end reason, or `None` when watching ended without one (left,
/// or dropped as too slow).
pub async fn watch(
    client: &Client,
    id: &str,
) -> Result<Option<crate::session::EndReason>, ClientError> {
    use crate::wire::WatchMessage;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let mut ws = client.open_watch(id).await?;
    let mut stdout = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let m = tokio::select! {
            _ = &mut ctrl_c => {
                let _ = ws.close(None).await;
                eprintln!("\r\n# stopped watching session {id}; it goes on\r");
                return Ok(None);
            }
            m = ws.next() => m,
        };
        let text = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(client.stream_error(format!(
                    "the server closed the watch before the session ended: {why}"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(client.stream_error(e)),
            None => {
                return Err(
                    client.stream_error("the watch connection closed before the session ended")
                );
            }
        };
        match serde_json::from_str::<WatchMessage>(&text) {
            Ok(WatchMessage::Header { line }) => {
                let h: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                eprintln!(
                    "# watching session {id} ({}, {}x{}); Ctrl-C stops watching, not the session\r",
                    h["title"].as_str().unwrap_or(""),
                    h["width"],
                    h["height"]
                );
            }
            Ok(WatchMessage::Events { lines }) => {
                for l in lines {
                    if let Ok((_, code, data)) = serde_json::from_str::<(f64, String, String)>(&l) {
                        show(&mut stdout, &code, &data)?;
                    }
                }
            }
            Ok(WatchMessage::Gap { dropped }) => {
                eprintln!("\r\n# {dropped} events were lost here\r");
            }
            Ok(WatchMessage::End { reason, message }) => {
                eprintln!("\r\nwardengate: {message}\r");
                let _ = ws.close(None).await;
                return Ok(reason);
            }
            // A message a newer server sends: skip it.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn playback_schedule_honours_speed_and_idle_limit() {
        let cast = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":0,\"title\":\"t\"}\n\
                    [0.5,\"o\",\"a\"]\n[10.5,\"o\",\"b\"]\nnot json\n[11.0,\"m\",\"exit-status 0\"]\n";
        let ev = parse_cast(cast);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[1].data, "b");
        assert_eq!(schedule(&ev, 1.0, None), vec![0.5, 10.5, 11.0]);
        assert_eq!(schedule(&ev, 2.0, None), vec![0.25, 5.25, 5.5]);
        assert_eq!(schedule(&ev, 1.0, Some(2.0)), vec![0.5, 2.5, 3.0]);
    }
}
