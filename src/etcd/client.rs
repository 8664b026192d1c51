//! Connecting to etcd and the unary calls.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, lease_client::LeaseClient,
    watch_client::WatchClient, AuthenticateRequest, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};

/// What a call failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint `{0}`: {1}")]
    Endpoint(String, String),
    /// The server (or the channel) answered a call with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

/// The client's side of TLS: whom to trust, who we are.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM of the CA the servers' certificates chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key this client presents.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify in the servers' certificates, if not the endpoint's.
    pub server_name: Option<String>,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `http://host:port` or `https://host:port`, one per member.
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// HTTP/2 pings every `keep_alive`, a peer silent for
    /// `keep_alive_timeout` after one is dead: finds a dead peer under a
    /// quiet watch.
    pub keep_alive: Duration,
    pub keep_alive_timeout: Duration,
    /// User and password, if the cluster has authentication enabled.
    pub user: Option<(String, String)>,
    pub tls: Option<Tls>,
}

impl ConnectOptions {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            user: None,
            tls: None,
        }
    }
}

/// The auth token every call carries, and how to get a new one.
#[derive(Debug)]
struct Auth {
    user: String,
    password: String,
    /// Locked only to read or replace the value, never across an await.
    token: RwLock<Option<MetadataValue<Ascii>>>,
}

/// Puts the current token into each request's metadata (etcd reads it
/// from `token`).
#[derive(Debug, Clone)]
pub struct TokenInterceptor(Option<Arc<Auth>>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(auth) = &self.0 {
            let token = auth.token.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(t) = token {
                req.metadata_mut().insert("token", t);
            }
        }
        Ok(req)
    }
}

pub(super) type Svc = InterceptedService<Channel, TokenInterceptor>;

/// A handle on one cluster; cheap to clone (one shared HTTP/2 channel,
/// balanced over the endpoints).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    auth: Option<Arc<Auth>>,
}

impl Client {
    /// Sets up the channel and, with a user, authenticates at once, so bad
    /// credentials show here. Without one, nothing is sent yet: an
    /// unreachable cluster shows in the first call.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, Error> {
        let mut endpoints = Vec::with_capacity(opts.endpoints.len());
        for e in &opts.endpoints {
            endpoints.push(endpoint(e, &opts)?);
        }
        let channel = Channel::balance_list(endpoints.into_iter());
        let auth = opts.user.map(|(user, password)| {
            Arc::new(Auth {
                user,
                password,
                token: RwLock::new(None),
            })
        });
        let c = Client { channel, auth };
        if c.auth.is_some() {
            c.authenticate().await?;
        }
        Ok(c)
    }

    /// Gets a new token for the configured user.
    async fn authenticate(&self) -> Result<(), Error> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let resp = AuthClient::new(self.channel.clone())
            .authenticate(AuthenticateRequest {
                name: auth.user.clone(),
                password: auth.password.clone(),
            })
            .await?
            .into_inner();
        let token = MetadataValue::try_from(resp.token.as_str())
            .map_err(|_| Status::internal("etcd answered a token that is not ASCII"))?;
        *auth.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token);
        Ok(())
    }

    fn intercepted(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), TokenInterceptor(self.auth.clone()))
    }

    pub fn kv(&self) -> KvClient<Svc> {
        KvClient::new(self.intercepted())
    }

    pub fn lease(&self) -> LeaseClient<Svc> {
        LeaseClient::new(self.intercepted())
    }

    pub fn watch_client(&self) -> WatchClient<Svc> {
        WatchClient::new(self.intercepted())
    }

    /// The auth service (tests use it to set up users and roles).
    pub fn auth(&self) -> AuthClient<Svc> {
        AuthClient::new(self.intercepted())
    }

    /// Runs `call`; if the token was refused (simple tokens expire, five
    /// minutes by default), authenticates again and runs it once more.
    pub(super) async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match call(self.clone()).await {
            Err(s) if s.code() == Code::Unauthenticated && self.auth.is_some() => {
                self.authenticate().await?;
                Ok(call(self.clone()).await?.into_inner())
            }
            r => Ok(r?.into_inner()),
        }
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.with_token(|c| {
            let req = req.clone();
            async move { c.kv().range(req).await }
        })
        .await
    }

    /// Reads one key (`kvs` is empty if it is absent).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<RangeResponse, Error> {
        self.range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    }

    /// Puts `key`, under `lease` if not 0.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<PutResponse, Error> {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        self.with_token(|c| {
            let req = req.clone();
            async move { c.kv().put(req).await }
        })
        .await
    }

    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteRangeResponse, Error> {
        let req = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        self.with_token(|c| {
            let req = req.clone();
            async move { c.kv().delete_range(req).await }
        })
        .await
    }

    /// `success` if every guard in `compare` holds, else nothing.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
    ) -> Result<TxnResponse, Error> {
        let req = TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        };
        self.with_token(|c| {
            let req = req.clone();
            async move { c.kv().txn(req).await }
        })
        .await
    }

    /// A lease of `ttl` seconds; its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, Error> {
        let r = self
            .with_token(|c| async move {
                c.lease()
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
            })
            .await?;
        if r.error.is_empty() {
            Ok(r.id)
        } else {
            Err(Status::internal(r.error).into())
        }
    }

    /// Drops history up to `revision` (tests: a follower cut off meanwhile
    /// cannot replay it).
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<(), Error> {
        self.with_token(|c| async move {
            c.kv()
                .compact(CompactionRequest { revision, physical })
                .await
        })
        .await
        .map(drop)
    }
}

fn endpoint(url: &str, opts: &ConnectOptions) -> Result<Endpoint, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::Endpoint(url.to_string(), e.to_string());
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(&e))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keep_alive)
        .keep_alive_timeout(opts.keep_alive_timeout)
        .keep_alive_while_idle(true);
    if let Some(t) = &opts.tls {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &t.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &t.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &t.server_name {
            tls = tls.domain_name(name.clone());
        }
        ep = ep.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(ep)
}
