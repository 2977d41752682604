//! The SSH server users' stock OpenSSH clients reach (`ssh -p 2222 USER:TARGET@gateway`):
//! accepts connections on `--ssh-listen`, authenticates a login certificate, starts the
//! session when authentication succeeds and hands every session channel to
//! [`super::channel::carry`], and every `direct-tcpip` channel to [`super::channel::forward`]
//! (allowed per target). Agent and X11 forwarding and every other channel type are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::watch;

use super::keys::SshKeys;
use super::link::{Identity, Link, LinkState};
use crate::api::AppState;
use crate::store::now_ms;
use crate::token::Role;

/// Splits a login `USER:TARGET` into its parts (both non-empty).
pub fn parse_login(login: &str) -> Option<(&str, &str)> {
    let (user, target) = login.split_once(':')?;
    (!user.is_empty() && !target.is_empty() && !target.contains(':')).then_some((user, target))
}

/// One client connection.
pub(crate) struct Conn {
    app: Arc<AppState>,
    keys: Arc<SshKeys>,
    peer: Option<SocketAddr>,
    who: Option<(Identity, String)>,
    /// Turns true once the client has logged in (ends the login grace timer).
    authed: watch::Sender<bool>,
    state_tx: watch::Sender<LinkState>,
    state_rx: watch::Receiver<LinkState>,
    gone: watch::Receiver<bool>,
}

impl Conn {
    async fn login(&self, user: &str, cert: &Certificate) -> Result<(Identity, String), String> {
        let (name, target) =
            parse_login(user).ok_or_else(|| format!("login `{user}` is not USER:TARGET"))?;
        let token_id = self
            .keys
            .check_login(cert, name)
            .map_err(|e| e.to_string())?;
        let token = self
            .app
            .store
            .token_by_id(&token_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("certificate names unknown token {token_id}"))?;
        if token.revoked_at.is_some() {
            return Err(format!("token {token_id} is revoked"));
        }
        if token.expires_at.is_some_and(|e| e <= now_ms()) {
            return Err(format!("token {token_id} has expired"));
        }
        let role = Role::parse(&token.role).unwrap_or(Role::User);
        Ok((
            Identity {
                name: token.name.clone(),
                token_id,
                admin: role.allows(Role::Admin),
                from: self.peer,
            },
            target.to_string(),
        ))
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        match self.login(user, certificate).await {
            Ok(who) => {
                tracing::info!(event = "ssh_login", user, token = %who.0.token_id, client = ?self.peer);
                self.who = Some(who);
                Ok(Auth::Accept)
            }
            Err(why) => {
                tracing::warn!(event = "ssh_login_refused", user, client = ?self.peer, reason = %why);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some((who, target)) = self.who.clone() else {
            return Ok(());
        };
        let _ = self.authed.send(true);
        let (app, keys, tx, mut gone) = (
            self.app.clone(),
            self.keys.clone(),
            self.state_tx.clone(),
            self.gone.clone(),
        );
        let handle = session.handle();
        tokio::spawn(async move {
            let status_tx = tx.clone();
            let status = move |m: String| {
                let _ = status_tx.send(LinkState::Waiting(m));
            };
            // A client that leaves while waiting withdraws its request; one that leaves once the
            // session is claimed ends it at once through `run`.
            let established =
                Link::establish(app, keys, &who, &target, &status, gone.clone()).await;
            match established {
                Ok((link, active)) => {
                    let _ = tx.send(LinkState::Ready(link.clone()));
                    let client_gone = async move {
                        let _ = gone.wait_for(|g| *g).await;
                    };
                    link.run(active, client_gone, Some(handle)).await;
                }
                Err(why) => {
                    tracing::warn!(event = "ssh_session_refused", target = %target, token = %who.token_id, reason = %why);
                    let _ = tx.send(LinkState::Failed(why));
                }
            }
        });
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(super::channel::carry(
            channel,
            session.handle(),
            self.state_rx.clone(),
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        tokio::spawn(super::channel::forward(
            channel,
            reply,
            self.state_rx.clone(),
            super::channel::ForwardRequest {
                host: host_to_connect.to_string(),
                port: port_to_connect,
                originator: (originator_address.to_string(), originator_port),
            },
        ));
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(event = "ssh_x11_refused");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!(event = "ssh_agent_forwarding_refused");
        Ok(false)
    }
}

/// The russh server configuration for `keys`.
pub(crate) fn config(keys: &SshKeys) -> russh::server::Config {
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![keys.host.clone()],
        auth_rejection_time: std::time::Duration::from_millis(300),
        auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
        inactivity_timeout: None,
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    }
}

/// `socket` and a second handle on the same connection (a duplicated descriptor, so it can never
/// name another socket later) for [`serve_connection`] to shut it down with.
pub(crate) fn with_cut_handle(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std = socket.into_std()?;
    let cut = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, cut))
}

/// Serves one accepted connection to its end. A connection that has not logged in within
/// `login_grace` (from accept, the version exchange included) is disconnected: an idle or
/// slow client cannot hold a connection, and its memory, before authentication.
pub(crate) async fn serve_connection(
    app: Arc<AppState>,
    keys: Arc<SshKeys>,
    config: Arc<russh::server::Config>,
    socket: crate::limits::Capped,
    cut: std::net::TcpStream,
    peer: SocketAddr,
    login_grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + login_grace;
    let (gone_tx, gone) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(LinkState::Waiting(String::new()));
    let (authed_tx, mut authed) = watch::channel(false);
    let conn = Conn {
        app,
        keys,
        peer: Some(peer),
        who: None,
        authed: authed_tx,
        state_tx,
        state_rx,
        gone,
    };
    let started =
        tokio::time::timeout_at(deadline, russh::server::run_stream(config, socket, conn)).await;
    match started {
        Ok(Ok(mut session)) => {
            let logged_in =
                tokio::time::timeout_at(deadline, async { authed.wait_for(|a| *a).await.is_ok() });
            let ended_early = tokio::select! {
                r = &mut session => Some(r),
                r = logged_in => match r {
                    Ok(_) => None,
                    Err(_) => {
                        tracing::info!(event = "ssh_login_timeout", client = %peer, grace = ?login_grace);
                        let handle = session.handle();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            handle.disconnect(
                                russh::Disconnect::ByApplication,
                                "no login within the login grace time".into(),
                                String::new(),
                            ),
                        )
                        .await;
                        // Before the key exchange the session task does not act on the
                        // disconnect: shutting the socket down ends its reads and writes.
                        let _ = cut.shutdown(std::net::Shutdown::Both);
                        let _ = tokio::time::timeout(Duration::from_secs(5), &mut session).await;
                        let _ = gone_tx.send(true);
                        return;
                    }
                },
            };
            let result = match ended_early {
                Some(r) => r,
                None => session.await,
            };
            if let Err(e) = result {
                tracing::debug!(event = "ssh_connection_error", client = %peer, error = %e);
            }
        }
        Ok(Err(e)) => tracing::debug!(event = "ssh_handshake_failed", client = %peer, error = %e),
        Err(_) => {
            tracing::info!(event = "ssh_login_timeout", client = %peer, grace = ?login_grace, phase = "version exchange");
            let _ = cut.shutdown(std::net::Shutdown::Both);
        }
    }
    let _ = gone_tx.send(true);
}

#[cfg(test)]
mod tests {
    #[test]
    fn logins_are_user_colon_target() {
        assert_eq!(super::parse_login("alice:db1"), Some(("alice", "db1")));
        assert_eq!(super::parse_login("alice"), None);
        assert_eq!(super::parse_login(":db1"), None);
        assert_eq!(super::parse_login("alice:"), None);
        assert_eq!(super::parse_login("a:b:c"), None);
    }
}
