//! The agent link's wire format (package `wardengate.agent.v1`, service `Agent`): prost
//! messages written by hand — no `protoc` in the build — and the tonic client and server that
//! `tonic-build`'s manual mode generated from them (checked in below; regenerate with a
//! `tonic_build::manual` service of the same three methods if a method changes).
//!
//! Field numbers are the contract: never reuse or renumber one.
#![allow(missing_docs)]

/// `Join`: a one-time join token and a certificate request for a new gateway.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinRequest {
    /// The join token from `wgctl gateways join-token`.
    #[prost(string, tag = "1")]
    pub token: String,
    /// The region the gateway serves; must match the token's.
    #[prost(string, tag = "2")]
    pub region: String,
    /// PEM certificate signing request for the key the gateway keeps.
    #[prost(string, tag = "3")]
    pub csr_pem: String,
}

/// `Renew`: a new certificate request from a gateway that holds a valid certificate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenewRequest {
    /// PEM certificate signing request (a new key).
    #[prost(string, tag = "1")]
    pub csr_pem: String,
}

/// A gateway's client certificate, as `Join` and `Renew` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Certificate {
    /// The gateway id (also the certificate's common name).
    #[prost(string, tag = "1")]
    pub gateway_id: String,
    /// PEM client certificate.
    #[prost(string, tag = "2")]
    pub cert_pem: String,
    /// Unix ms after which the certificate is refused.
    #[prost(int64, tag = "3")]
    pub not_after_ms: i64,
}

/// Gateway → control plane on the link.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Up {
    #[prost(oneof = "up::Msg", tags = "1, 2")]
    pub msg: Option<up::Msg>,
}

/// The variants of [`Up`].
pub mod up {
    /// One message up.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Msg {
        /// The gateway's state, sent every heartbeat interval.
        #[prost(message, tag = "1")]
        Heartbeat(super::Heartbeat),
        /// A session event (numbered; acknowledged by [`super::down::Msg::Ack`]).
        #[prost(message, tag = "2")]
        Event(super::SessionEvent),
    }
}

/// A gateway's state (its id comes from its certificate, never from the message).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub version: String,
    /// The address the gateway serves relays on.
    #[prost(string, tag = "3")]
    pub address: String,
    /// Relays it carries now.
    #[prost(int64, tag = "4")]
    pub sessions: i64,
    /// The ids of the sessions it relays now: the control plane answers with a terminate for
    /// each one its session core has ended or is terminating (reconciliation heals a lost
    /// command).
    #[prost(string, repeated, tag = "5")]
    pub live_sessions: Vec<String>,
    /// The gateway's sessions are over at most this long after the last heartbeat the control
    /// plane recorded (its `--offline-grace` plus the time it takes to notice a lost link); 0:
    /// not reported (an older gateway).
    #[prost(int64, tag = "6")]
    pub lost_after_ms: i64,
}

/// Control plane → gateway on the link.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Down {
    #[prost(oneof = "down::Msg", tags = "1, 2, 3, 4")]
    pub msg: Option<down::Msg>,
}

/// The variants of [`Down`].
pub mod down {
    /// One message down.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Msg {
        /// First message of every link: which replica holds it.
        #[prost(message, tag = "1")]
        Welcome(super::Welcome),
        /// Drain: refuse new relays, let owned sessions end within the drain timeout.
        #[prost(message, tag = "2")]
        Drain(super::Drain),
        /// Terminate one session through the session core.
        #[prost(message, tag = "3")]
        Terminate(super::Terminate),
        /// Every event up to `seq` is recorded: the gateway may forget them.
        #[prost(message, tag = "4")]
        Ack(super::Ack),
    }
}

/// The link is up, held by `replica`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    #[prost(string, tag = "1")]
    pub replica: String,
    /// The control plane's version (gateways must never be newer).
    #[prost(string, tag = "2")]
    pub version: String,
    /// Public halves of the grant keys (signing key first): what regional grants verify with.
    #[prost(message, repeated, tag = "3")]
    pub grant_keys: Vec<GrantKey>,
}

/// One Ed25519 grant key's public half.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrantKey {
    #[prost(string, tag = "1")]
    pub kid: String,
    /// 32 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
}

/// A session event of a remote gateway, numbered per gateway from 1 without gaps.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct SessionEvent {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub session_id: String,
    /// `started`, `bytes` or `ended`.
    #[prost(string, tag = "3")]
    pub kind: String,
    /// Unix ms it happened at the gateway.
    #[prost(int64, tag = "4")]
    pub at_ms: i64,
    #[prost(uint64, tag = "5")]
    pub bytes_up: u64,
    #[prost(uint64, tag = "6")]
    pub bytes_down: u64,
    /// Why it ended (an `EndReason`'s text), for `ended`.
    #[prost(string, tag = "7")]
    pub reason: String,
    /// The client's address, for `started`.
    #[prost(string, tag = "8")]
    pub client: String,
    /// The token the session belongs to, for `started`.
    #[prost(string, tag = "9")]
    pub token_id: String,
}

/// Acknowledges every event up to `seq`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
}

/// Drain the gateway.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Drain {
    /// How long owned sessions may continue, in seconds (0: the gateway's own default).
    #[prost(uint64, tag = "1")]
    pub timeout_seconds: u64,
}

/// Terminate a session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Terminate {
    #[prost(string, tag = "1")]
    pub session_id: String,
}

// Generated by tonic-build 0.14.9 (manual mode); do not edit by hand.
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unused_qualifications
)]
mod generated {
    /// Generated client implementations.
    pub mod agent_client {
        #![allow(
            unused_variables,
            dead_code,
            missing_docs,
            clippy::wildcard_imports,
            clippy::let_unit_value
        )]
        use tonic::codegen::http::Uri;
        use tonic::codegen::*;
        /// The agent link between a remote gateway and the control plane.
        #[derive(Debug, Clone)]
        pub struct AgentClient<T> {
            inner: tonic::client::Grpc<T>,
        }
        impl AgentClient<tonic::transport::Channel> {
            /// Attempt to create a new client by connecting to a given endpoint.
            pub async fn connect<D>(dst: D) -> Result<Self, tonic::transport::Error>
            where
                D: TryInto<tonic::transport::Endpoint>,
                D::Error: Into<StdError>,
            {
                let conn = tonic::transport::Endpoint::new(dst)?.connect().await?;
                Ok(Self::new(conn))
            }
        }
        impl<T> AgentClient<T>
        where
            T: tonic::client::GrpcService<tonic::body::Body>,
            T::Error: Into<StdError>,
            T::ResponseBody: Body<Data = Bytes> + std::marker::Send + 'static,
            <T::ResponseBody as Body>::Error: Into<StdError> + std::marker::Send,
        {
            pub fn new(inner: T) -> Self {
                let inner = tonic::client::Grpc::new(inner);
                Self { inner }
            }
            pub fn with_origin(inner: T, origin: Uri) -> Self {
                let inner = tonic::client::Grpc::with_origin(inner, origin);
                Self { inner }
            }
            pub fn with_interceptor<F>(
                inner: T,
                interceptor: F,
            ) -> AgentClient<InterceptedService<T, F>>
            where
                F: tonic::service::Interceptor,
                T::ResponseBody: Default,
                T: tonic::codegen::Service<
                        http::Request<tonic::body::Body>,
                        Response = http::Response<
                            <T as tonic::client::GrpcService<tonic::body::Body>>::ResponseBody,
                        >,
                    >,
                <T as tonic::codegen::Service<http::Request<tonic::body::Body>>>::Error:
                    Into<StdError> + std::marker::Send + std::marker::Sync,
            {
                AgentClient::new(InterceptedService::new(inner, interceptor))
            }
            /// Compress requests with the given encoding.
            ///
            /// This requires the server to support it otherwise it might respond with an
            /// error.
            #[must_use]
            pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
                self.inner = self.inner.send_compressed(encoding);
                self
            }
            /// Enable decompressing responses.
            #[must_use]
            pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
                self.inner = self.inner.accept_compressed(encoding);
                self
            }
            /// Limits the maximum size of a decoded message.
            ///
            /// Default: `4MB`
            #[must_use]
            pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                self.inner = self.inner.max_decoding_message_size(limit);
                self
            }
            /// Limits the maximum size of an encoded message.
            ///
            /// Default: `usize::MAX`
            #[must_use]
            pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
                self.inner = self.inner.max_encoding_message_size(limit);
                self
            }
            /// Trades a one-time join token and a CSR for a client certificate.
            pub async fn join(
                &mut self,
                request: impl tonic::IntoRequest<super::super::JoinRequest>,
            ) -> std::result::Result<tonic::Response<super::super::Certificate>, tonic::Status>
            {
                self.inner.ready().await.map_err(|e| {
                    tonic::Status::unknown(format!("Service was not ready: {}", e.into()))
                })?;
                let codec = tonic_prost::ProstCodec::default();
                let path = http::uri::PathAndQuery::from_static("/wardengate.agent.v1.Agent/Join");
                let mut req = request.into_request();
                req.extensions_mut()
                    .insert(GrpcMethod::new("wardengate.agent.v1.Agent", "Join"));
                self.inner.unary(req, path, codec).await
            }
            /// Renews the caller's client certificate (mutual TLS).
            pub async fn renew(
                &mut self,
                request: impl tonic::IntoRequest<super::super::RenewRequest>,
            ) -> std::result::Result<tonic::Response<super::super::Certificate>, tonic::Status>
            {
                self.inner.ready().await.map_err(|e| {
                    tonic::Status::unknown(format!("Service was not ready: {}", e.into()))
                })?;
                let codec = tonic_prost::ProstCodec::default();
                let path = http::uri::PathAndQuery::from_static("/wardengate.agent.v1.Agent/Renew");
                let mut req = request.into_request();
                req.extensions_mut()
                    .insert(GrpcMethod::new("wardengate.agent.v1.Agent", "Renew"));
                self.inner.unary(req, path, codec).await
            }
            /// The long-lived link: heartbeats up, commands down.
            pub async fn link(
                &mut self,
                request: impl tonic::IntoStreamingRequest<Message = super::super::Up>,
            ) -> std::result::Result<
                tonic::Response<tonic::codec::Streaming<super::super::Down>>,
                tonic::Status,
            > {
                self.inner.ready().await.map_err(|e| {
                    tonic::Status::unknown(format!("Service was not ready: {}", e.into()))
                })?;
                let codec = tonic_prost::ProstCodec::default();
                let path = http::uri::PathAndQuery::from_static("/wardengate.agent.v1.Agent/Link");
                let mut req = request.into_streaming_request();
                req.extensions_mut()
                    .insert(GrpcMethod::new("wardengate.agent.v1.Agent", "Link"));
                self.inner.streaming(req, path, codec).await
            }
        }
    }
    /// Generated server implementations.
    pub mod agent_server {
        #![allow(
            unused_variables,
            dead_code,
            missing_docs,
            clippy::wildcard_imports,
            clippy::let_unit_value
        )]
        use tonic::codegen::*;
        /// Generated trait containing gRPC methods that should be implemented for use with AgentServer.
        #[async_trait]
        pub trait Agent: std::marker::Send + std::marker::Sync + 'static {
            /// Trades a one-time join token and a CSR for a client certificate.
            async fn join(
                &self,
                request: tonic::Request<super::super::JoinRequest>,
            ) -> std::result::Result<tonic::Response<super::super::Certificate>, tonic::Status>;
            /// Renews the caller's client certificate (mutual TLS).
            async fn renew(
                &self,
                request: tonic::Request<super::super::RenewRequest>,
            ) -> std::result::Result<tonic::Response<super::super::Certificate>, tonic::Status>;
            /// Server streaming response type for the Link method.
            type LinkStream: tonic::codegen::tokio_stream::Stream<
                    Item = std::result::Result<super::super::Down, tonic::Status>,
                > + std::marker::Send
                + 'static;
            /// The long-lived link: heartbeats up, commands down.
            async fn link(
                &self,
                request: tonic::Request<tonic::Streaming<super::super::Up>>,
            ) -> std::result::Result<tonic::Response<Self::LinkStream>, tonic::Status>;
        }
        /// The agent link between a remote gateway and the control plane.
        #[derive(Debug)]
        pub struct AgentServer<T> {
            inner: Arc<T>,
            accept_compression_encodings: EnabledCompressionEncodings,
            send_compression_encodings: EnabledCompressionEncodings,
            max_decoding_message_size: Option<usize>,
            max_encoding_message_size: Option<usize>,
        }
        impl<T> AgentServer<T> {
            pub fn new(inner: T) -> Self {
                Self::from_arc(Arc::new(inner))
            }
            pub fn from_arc(inner: Arc<T>) -> Self {
                Self {
                    inner,
                    accept_compression_encodings: Default::default(),
                    send_compression_encodings: Default::default(),
                    max_decoding_message_size: None,
                    max_encoding_message_size: None,
                }
            }
            pub fn with_interceptor<F>(inner: T, interceptor: F) -> InterceptedService<Self, F>
            where
                F: tonic::service::Interceptor,
            {
                InterceptedService::new(Self::new(inner), interceptor)
            }
            /// Enable decompressing requests with the given encoding.
            #[must_use]
            pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
                self.accept_compression_encodings.enable(encoding);
                self
            }
            /// Compress responses with the given encoding, if the client supports it.
            #[must_use]
            pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
                self.send_compression_encodings.enable(encoding);
                self
            }
            /// Limits the maximum size of a decoded message.
            ///
            /// Default: `4MB`
            #[must_use]
            pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                self.max_decoding_message_size = Some(limit);
                self
            }
            /// Limits the maximum size of an encoded message.
            ///
            /// Default: `usize::MAX`
            #[must_use]
            pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
                self.max_encoding_message_size = Some(limit);
                self
            }
        }
        impl<T, B> tonic::codegen::Service<http::Request<B>> for AgentServer<T>
        where
            T: Agent,
            B: Body + std::marker::Send + 'static,
            B::Error: Into<StdError> + std::marker::Send + 'static,
        {
            type Response = http::Response<tonic::body::Body>;
            type Error = std::convert::Infallible;
            type Future = BoxFuture<Self::Response, Self::Error>;
            fn poll_ready(
                &mut self,
                _cx: &mut Context<'_>,
            ) -> Poll<std::result::Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, req: http::Request<B>) -> Self::Future {
                match req.uri().path() {
                    "/wardengate.agent.v1.Agent/Join" => {
                        #[allow(non_camel_case_types)]
                        struct JoinSvc<T: Agent>(pub Arc<T>);
                        impl<T: Agent> tonic::server::UnaryService<super::super::JoinRequest> for JoinSvc<T> {
                            type Response = super::super::Certificate;
                            type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
                            fn call(
                                &mut self,
                                request: tonic::Request<super::super::JoinRequest>,
                            ) -> Self::Future {
                                let inner = Arc::clone(&self.0);
                                let fut = async move { <T as Agent>::join(&inner, request).await };
                                Box::pin(fut)
                            }
                        }
                        let accept_compression_encodings = self.accept_compression_encodings;
                        let send_compression_encodings = self.send_compression_encodings;
                        let max_decoding_message_size = self.max_decoding_message_size;
                        let max_encoding_message_size = self.max_encoding_message_size;
                        let inner = self.inner.clone();
                        let fut = async move {
                            let method = JoinSvc(inner);
                            let codec = tonic_prost::ProstCodec::default();
                            let mut grpc = tonic::server::Grpc::new(codec)
                                .apply_compression_config(
                                    accept_compression_encodings,
                                    send_compression_encodings,
                                )
                                .apply_max_message_size_config(
                                    max_decoding_message_size,
                                    max_encoding_message_size,
                                );
                            let res = grpc.unary(method, req).await;
                            Ok(res)
                        };
                        Box::pin(fut)
                    }
                    "/wardengate.agent.v1.Agent/Renew" => {
                        #[allow(non_camel_case_types)]
                        struct RenewSvc<T: Agent>(pub Arc<T>);
                        impl<T: Agent> tonic::server::UnaryService<super::super::RenewRequest> for RenewSvc<T> {
                            type Response = super::super::Certificate;
                            type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
                            fn call(
                                &mut self,
                                request: tonic::Request<super::super::RenewRequest>,
                            ) -> Self::Future {
                                let inner = Arc::clone(&self.0);
                                let fut = async move { <T as Agent>::renew(&inner, request).await };
                                Box::pin(fut)
                            }
                        }
                        let accept_compression_encodings = self.accept_compression_encodings;
                        let send_compression_encodings = self.send_compression_encodings;
                        let max_decoding_message_size = self.max_decoding_message_size;
                        let max_encoding_message_size = self.max_encoding_message_size;
                        let inner = self.inner.clone();
                        let fut = async move {
                            let method = RenewSvc(inner);
                            let codec = tonic_prost::ProstCodec::default();
                            let mut grpc = tonic::server::Grpc::new(codec)
                                .apply_compression_config(
                                    accept_compression_encodings,
                                    send_compression_encodings,
                                )
                                .apply_max_message_size_config(
                                    max_decoding_message_size,
                                    max_encoding_message_size,
                                );
                            let res = grpc.unary(method, req).await;
                            Ok(res)
                        };
                        Box::pin(fut)
                    }
                    "/wardengate.agent.v1.Agent/Link" => {
                        #[allow(non_camel_case_types)]
                        struct LinkSvc<T: Agent>(pub Arc<T>);
                        impl<T: Agent> tonic::server::StreamingService<super::super::Up> for LinkSvc<T> {
                            type Response = super::super::Down;
                            type ResponseStream = T::LinkStream;
                            type Future =
                                BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;
                            fn call(
                                &mut self,
                                request: tonic::Request<tonic::Streaming<super::super::Up>>,
                            ) -> Self::Future {
                                let inner = Arc::clone(&self.0);
                                let fut = async move { <T as Agent>::link(&inner, request).await };
                                Box::pin(fut)
                            }
                        }
                        let accept_compression_encodings = self.accept_compression_encodings;
                        let send_compression_encodings = self.send_compression_encodings;
                        let max_decoding_message_size = self.max_decoding_message_size;
                        let max_encoding_message_size = self.max_encoding_message_size;
                        let inner = self.inner.clone();
                        let fut = async move {
                            let method = LinkSvc(inner);
                            let codec = tonic_prost::ProstCodec::default();
                            let mut grpc = tonic::server::Grpc::new(codec)
                                .apply_compression_config(
                                    accept_compression_encodings,
                                    send_compression_encodings,
                                )
                                .apply_max_message_size_config(
                                    max_decoding_message_size,
                                    max_encoding_message_size,
                                );
                            let res = grpc.streaming(method, req).await;
                            Ok(res)
                        };
                        Box::pin(fut)
                    }
                    _ => Box::pin(async move {
                        let mut response = http::Response::new(tonic::body::Body::default());
                        let headers = response.headers_mut();
                        headers.insert(
                            tonic::Status::GRPC_STATUS,
                            (tonic::Code::Unimplemented as i32).into(),
                        );
                        headers.insert(
                            http::header::CONTENT_TYPE,
                            tonic::metadata::GRPC_CONTENT_TYPE,
                        );
                        Ok(response)
                    }),
                }
            }
        }
        impl<T> Clone for AgentServer<T> {
            fn clone(&self) -> Self {
                let inner = self.inner.clone();
                Self {
                    inner,
                    accept_compression_encodings: self.accept_compression_encodings,
                    send_compression_encodings: self.send_compression_encodings,
                    max_decoding_message_size: self.max_decoding_message_size,
                    max_encoding_message_size: self.max_encoding_message_size,
                }
            }
        }
        /// Generated gRPC service name
        pub const SERVICE_NAME: &str = "wardengate.agent.v1.Agent";
        impl<T> tonic::server::NamedService for AgentServer<T> {
            const NAME: &'static str = SERVICE_NAME;
        }
    }
}
pub use generated::{agent_client, agent_server};
