//! Helpers for the auth tests of the gateway: keys, honest and forged tokens, backends that
//! count their calls, an in-process gateway, and HTTP over loopback (hyper or raw bytes).
//! Included with `#[path = "support/auth.rs"] mod auth_support;` next to `mod support;`.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use micro::{
    Service,
    api::Gateway,
    auth::{
        Access, Account, AccountKind, Algorithm, AuthLayer, Issuer, KeySet, MemoryRevocations,
        Resource, Rule, SigningKey, Verifier,
    },
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
};
use ring::signature::Ed25519KeyPair;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::support::{FixtureGreeter, pb as greeter_pb};

pub const ISS: &str = "https://auth.micro.test";
pub const AUD: &str = "micro";
/// How long any one exchange may take on a loaded machine.
pub use super::support::http::CALL_TIMEOUT;

#[allow(unreachable_pub, missing_docs, clippy::all)]
pub mod bookshelf_pb {
    micro::include_proto!("bookshelf.v1");
}

// --- keys and tokens ---

/// One signing key (kid `k1`), its issuer, and a verifier trusting it, with revocations.
pub struct Keys {
    /// A copy of the private key, to forge tokens signed "correctly".
    pub key: SigningKey,
    pub issuer: Issuer,
    pub verifier: Arc<Verifier>,
    pub revocations: Arc<MemoryRevocations>,
}

impl Keys {
    pub fn new() -> Self {
        let key = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
        let mut keys = KeySet::new();
        keys.insert_signing(&key).unwrap();
        let copy = SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", key.to_pkcs8()).unwrap();
        let revocations = Arc::new(MemoryRevocations::new());
        let verifier = Verifier::new(keys, ISS, AUD).with_revocations(revocations.clone());
        Self {
            key: copy,
            issuer: Issuer::new(ISS, AUD, key),
            verifier: Arc::new(verifier),
            revocations,
        }
    }

    /// A valid token of an account holding `scopes`.
    pub fn token(&self, scopes: &[&str]) -> String {
        self.issuer.issue(&account(scopes)).unwrap().token
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

pub fn account(scopes: &[&str]) -> Account {
    Account {
        id: "caller".to_owned(),
        kind: AccountKind::Service,
        scopes: scopes.iter().map(|&s| s.to_owned()).collect(),
        metadata: BTreeMap::new(),
        issuer: String::new(),
    }
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The decoded header or payload (`part` 0 or 1) of a token.
pub fn part(token: &str, part: usize) -> Value {
    let text = token.split('.').nth(part).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
}

/// A token with any header and payload, signed by `sign` over `header.payload`.
pub fn craft(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = sign(signed.as_bytes());
    format!("{signed}.{}", b64(signature))
}

/// Signs with the private half of the Ed25519 `key`.
pub fn ed25519(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |message| {
        Ed25519KeyPair::from_pkcs8(key.to_pkcs8())
            .unwrap()
            .sign(message)
            .as_ref()
            .to_vec()
    }
}

/// A token from an issuer like `keys.issuer` but with another issuer, audience or key,
/// issued at `at`.
pub fn token_from(key: &SigningKey, iss: &str, aud: &str, at: SystemTime) -> String {
    let copy = SigningKey::from_pkcs8(key.algorithm(), key.kid(), key.to_pkcs8()).unwrap();
    Issuer::new(iss, aud, copy)
        .issue_at(&account(&["admin"]), at)
        .unwrap()
        .token
}

// --- rules ---

pub fn rule(
    id: &str,
    scope: &str,
    name: &str,
    endpoint: &str,
    access: Access,
    priority: i32,
) -> Rule {
    Rule {
        id: id.to_owned(),
        scope: scope.to_owned(),
        resource: Resource::service(name, endpoint),
        access,
        priority,
    }
}

// --- backends ---

/// Calls that reached a backend, by method name.
#[derive(Debug, Default, Clone)]
pub struct Calls(Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Calls {
    pub fn hit(&self, method: &'static str) {
        *self.0.lock().unwrap().entry(method).or_default() += 1;
    }

    pub fn get(&self, method: &str) -> usize {
        self.0.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, usize> {
        self.0.lock().unwrap().clone()
    }
}

/// A bookshelf whose every method counts its calls and answers an empty reply.
#[derive(Debug, Default, Clone)]
pub struct CountingBookshelf {
    pub calls: Calls,
}

// The whole impl comes out of the macro, so that `async_trait` sees the methods.
macro_rules! counting_bookshelf {
    ($($fn:ident, $name:literal, $req:ident, $res:ident;)*) => {
        #[tonic::async_trait]
        impl bookshelf_pb::bookshelf_server::Bookshelf for CountingBookshelf {
            $(
                async fn $fn(
                    &self,
                    _request: GrpcRequest<bookshelf_pb::$req>,
                ) -> Result<GrpcResponse<bookshelf_pb::$res>, Status> {
                    self.calls.hit($name);
                    Ok(GrpcResponse::new(bookshelf_pb::$res::default()))
                }
            )*

            type ListBooksStream = std::pin::Pin<
                Box<dyn tokio_stream::Stream<Item = Result<bookshelf_pb::Book, Status>> + Send>,
            >;

            async fn list_books(
                &self,
                _request: GrpcRequest<bookshelf_pb::ListBooksRequest>,
            ) -> Result<GrpcResponse<Self::ListBooksStream>, Status> {
                self.calls.hit("ListBooks");
                Ok(GrpcResponse::new(Box::pin(tokio_stream::iter([Ok(
                    bookshelf_pb::Book::default(),
                )]))))
            }
        }
    };
}

counting_bookshelf! {
    create_shelf, "CreateShelf", CreateShelfRequest, Shelf;
    get_shelf, "GetShelf", GetShelfRequest, Shelf;
    delete_shelf, "DeleteShelf", DeleteShelfRequest, Empty;
    create_book, "CreateBook", CreateBookRequest, Book;
    get_book, "GetBook", GetBookRequest, Book;
    update_book, "UpdateBook", UpdateBookRequest, Book;
    delete_book, "DeleteBook", DeleteBookRequest, Empty;
    search_books, "SearchBooks", SearchBooksRequest, SearchBooksResponse;
    lend_book, "LendBook", LendBookRequest, Book;
}

/// A greeter that counts its calls.
#[derive(Debug, Default, Clone)]
pub struct CountingGreeter {
    pub calls: Calls,
    inner: FixtureGreeter,
}

#[tonic::async_trait]
impl greeter_pb::greeter_server::Greeter for CountingGreeter {
    async fn say_hello(
        &self,
        request: GrpcRequest<greeter_pb::HelloRequest>,
    ) -> Result<GrpcResponse<greeter_pb::HelloReply>, Status> {
        self.calls.hit("SayHello");
        self.inner.say_hello(request).await
    }

    type StreamHellosStream =
        <FixtureGreeter as greeter_pb::greeter_server::Greeter>::StreamHellosStream;

    async fn stream_hellos(
        &self,
        request: GrpcRequest<greeter_pb::StreamHellosRequest>,
    ) -> Result<GrpcResponse<Self::StreamHellosStream>, Status> {
        self.calls.hit("StreamHellos");
        self.inner.stream_hellos(request).await
    }
}

pub fn memory_registry() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}

/// Starts `greeter` and `bookshelf` on 127.0.0.1, registered in `registry`, each behind
/// `layer(name)` when given. Reflection stays public so the gateway can read schemas.
pub async fn start_backends(
    registry: &SharedRegistry,
    layer: Option<&dyn Fn(&str) -> AuthLayer>,
) -> Backends {
    let greeter = CountingGreeter::default();
    let bookshelf = CountingBookshelf::default();
    let mut greeter_service = Service::builder("greeter")
        .registry(registry.clone())
        .address("127.0.0.1:0")
        .add_service(greeter_pb::greeter_server::GreeterServer::new(
            greeter.clone(),
        ));
    let mut bookshelf_service = Service::builder("bookshelf")
        .registry(registry.clone())
        .address("127.0.0.1:0")
        .add_service(bookshelf_pb::bookshelf_server::BookshelfServer::new(
            bookshelf.clone(),
        ));
    if let Some(layer) = layer {
        greeter_service = greeter_service.layer(layer("greeter").public_reflection(true));
        bookshelf_service = bookshelf_service.layer(layer("bookshelf").public_reflection(true));
    }
    let greeter_running = greeter_service.build().unwrap().start().await.unwrap();
    let bookshelf_running = bookshelf_service.build().unwrap().start().await.unwrap();
    Backends {
        greeter_addr: greeter_running.local_address().to_owned(),
        bookshelf_addr: bookshelf_running.local_address().to_owned(),
        greeter: greeter.calls,
        bookshelf: bookshelf.calls,
        _running: vec![greeter_running, bookshelf_running],
    }
}

pub struct Backends {
    pub greeter_addr: String,
    pub bookshelf_addr: String,
    pub greeter: Calls,
    pub bookshelf: Calls,
    _running: Vec<RunningService>,
}

/// A gateway on 127.0.0.1 with `registry` (and `auth` when given), served until the test's
/// runtime ends.
pub async fn start_gateway(registry: &SharedRegistry, auth: Option<AuthLayer>) -> SocketAddr {
    let mut builder = Gateway::builder().registry(registry.clone());
    if let Some(auth) = auth {
        builder = builder.auth(auth);
    }
    serve(builder.build().unwrap()).await
}

pub async fn serve(gateway: Gateway) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener));
    addr
}

/// A tonic channel to `addr`.
pub async fn grpc_channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `request` with `authorization: Bearer <token>` when a token is given.
pub fn with_token<T>(message: T, token: Option<&str>) -> GrpcRequest<T> {
    let mut request = GrpcRequest::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

// --- HTTP ---

pub use super::support::http::{Http, Reply};

/// The content type of the OAuth2 token endpoint's form.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// `authorization: Basic` for a client id and secret, each form-encoded (RFC 6749 §2.3.1).
pub fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `POST /oauth/token` with the `form` and `headers` (after the form's content type).
pub async fn oauth_token(http: &Http, headers: &[(&str, &str)], form: &str) -> Reply {
    let mut all = vec![("content-type", FORM)];
    all.extend_from_slice(headers);
    http.request(Method::POST, "/oauth/token", &all, form.to_owned())
        .await
}

/// A brute-force run against `POST /oauth/token`: 1,000 client-credentials requests from
/// `attacker` for `id` with wrong secrets, each a 401 until the first 429 and a 429 from
/// then on; every 50th attempt, `valid` asks for a token with `valid_form`.
pub struct BruteForceRun<'a> {
    pub attacker: &'a Http,
    pub id: &'a str,
    /// The wrong secret of an attempt.
    pub guess: &'a dyn Fn(usize) -> String,
    /// Checks a 401.
    pub refused: &'a dyn Fn(&Reply),
    /// Checks a 429 of an attempt.
    pub limited: &'a dyn Fn(&Reply, usize),
    pub valid: &'a Http,
    pub valid_form: &'a str,
    /// Checks the valid client's reply at an attempt.
    pub issued: &'a dyn Fn(&Reply, usize),
}

impl BruteForceRun<'_> {
    /// Runs the attempts: how many were refused (401), limited (429), and how many tokens
    /// the valid client got.
    pub async fn run(&self) -> (usize, usize, usize) {
        let (mut refused, mut limited, mut issued) = (0, 0, 0);
        for attempt in 0..1000 {
            let reply = oauth_token(
                self.attacker,
                &[("authorization", &basic(self.id, &(self.guess)(attempt)))],
                "grant_type=client_credentials",
            )
            .await;
            match reply.status.as_u16() {
                401 => {
                    assert_eq!(limited, 0, "attempt {attempt}: a 401 after a 429");
                    (self.refused)(&reply);
                    refused += 1;
                }
                429 => {
                    (self.limited)(&reply, attempt);
                    limited += 1;
                }
                other => panic!("attempt {attempt}: {other} {reply:?}"),
            }
            if attempt % 50 == 0 {
                let reply = oauth_token(self.valid, &[], self.valid_form).await;
                (self.issued)(&reply, attempt);
                issued += 1;
            }
        }
        (refused, limited, issued)
    }
}

/// One HTTP/1.1 request written byte for byte (the request target exactly as given, no
/// client normalizing it), on a new connection; the reply read to the end.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str, body: &str) -> Reply {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse_reply(&raw)
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .expect("raw HTTP exchange in time")
}

/// A whole HTTP/1.1 reply (`connection: close`; a chunked body is de-chunked).
fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: Bytes::from(body),
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}
