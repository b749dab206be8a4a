//! `micro server` with the auth service: the seeded admin and rules, enforcement on the
//! platform services, and the `micro auth` commands, against a real server process.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::os::unix::fs::PermissionsExt as _;

use micro::platform::{
    auth::{AuthClient, TokenGrant},
    proto::kv::v1::{self as kv, kv_client::KvClient},
};
use support::server::MicroServer;
use tonic::Code;

/// A `micro server` on a free loopback port, registered in a private registry.
struct Server {
    inner: MicroServer,
    addr: String,
    secret_file: String,
}

impl Server {
    async fn start() -> Self {
        let inner = MicroServer::builder()
            .args(&["--store", "memory"])
            .start()
            .await;
        assert!(
            inner
                .lines
                .iter()
                .any(|line| line.starts_with("service name=micro.auth ")),
            "no `service name=micro.auth` line"
        );
        Self {
            addr: inner.addr.clone(),
            secret_file: inner
                .admin_secret_file
                .clone()
                .expect("an `auth admin` line before ready"),
            inner,
        }
    }

    fn admin_secret(&self) -> String {
        self.inner.admin_secret()
    }

    async fn admin_token(&self) -> String {
        AuthClient::connect(&self.addr)
            .unwrap()
            .token(
                TokenGrant::ClientCredentials {
                    id: "admin".into(),
                    secret: self.admin_secret(),
                },
                &[],
            )
            .await
            .unwrap()
            .access_token
    }

    /// Runs `micro args…` with this server's registry; `(exit code, stdout, stderr)`.
    async fn micro(&self, args: &[&str], token: Option<&str>) -> (i32, String, String) {
        let env: Vec<(&str, &str)> = token.map(|t| ("MICRO_AUTH_TOKEN", t)).into_iter().collect();
        self.inner.micro(args, &env, None).await
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

fn kv_get() -> tonic::Request<kv::GetRequest> {
    tonic::Request::new(kv::GetRequest {
        namespace: Some(kv::Namespace {
            database: "micro".into(),
            table: "default".into(),
        }),
        key: "k".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_seeds_auth_and_enforces_it_on_its_services() {
    let server = Server::start().await;
    let mode = std::fs::metadata(&server.secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", server.secret_file);

    // micro.auth admin calls: refused without a token, fine with the admin's.
    let auth = AuthClient::connect(&server.addr).unwrap();
    let refused = auth.list_accounts().await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let token = server.admin_token().await;
    let admin = auth.with_token(&token);
    let accounts = admin.list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].id, "admin");
    assert_eq!(accounts[0].scopes, ["admin"]);
    let rules: Vec<_> = admin
        .list_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        rules,
        [
            "auth-jwks-public",
            "auth-token-public",
            "auth-admin",
            "auth-deny",
            "default"
        ]
    );

    // kv works without a token under the `default` rule…
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(channel.clone());
    kv.get(kv_get()).await.unwrap();
    // … and not once it is deleted; health stays public.
    admin.delete_rule("default").await.unwrap();
    let refused = kv.get(kv_get()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("micro.kv"), "{refused:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_auth_commands_against_a_server() {
    let server = Server::start().await;
    let secret = server.admin_secret();

    // token: prints the access token, or the whole response as JSON.
    let (code, out, err) = server
        .micro(
            &["auth", "token", "--id", "admin", "--secret", &secret],
            None,
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let token = out.trim().to_owned();
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    let (code, out, err) = server
        .micro(
            &[
                "auth", "token", "--id", "admin", "--secret", &secret, "--output", "json",
            ],
            None,
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let response: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(response["token_type"], "Bearer");
    assert_eq!(response["scopes"], serde_json::json!(["admin"]));
    let (code, _, err) = server
        .micro(
            &[
                "auth",
                "token",
                "--id",
                "admin",
                "--secret",
                "not-the-secret-at-all",
            ],
            None,
        )
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    // accounts create: needs the admin token (MICRO_AUTH_TOKEN).
    let (code, _, err) = server
        .micro(&["auth", "accounts", "create", "billing"], None)
        .await;
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = server
        .micro(
            &["auth", "accounts", "create", "billing", "--scope", "read"],
            Some(&token),
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let billing_secret = out
        .trim()
        .strip_prefix("id=billing secret=")
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let (code, out, err) = server
        .micro(
            &[
                "auth",
                "token",
                "--id",
                "billing",
                "--secret",
                &billing_secret,
            ],
            None,
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let (code, _, err) = server
        .micro(&["auth", "accounts", "create", "bad id"], Some(&token))
        .await;
    assert_eq!(code, 2, "{err}");

    // inspect and keys, with the admin token; an unreachable service is exit 3.
    let (code, out, err) = server
        .micro(&["auth", "inspect", &token], Some(&token))
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let inspected: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(inspected["account"]["id"], "admin");
    let (code, out, err) = server
        .micro(&["auth", "keys", "jwks", "--output", "json"], None)
        .await;
    assert_eq!(code, 0, "jwks is public: stdout: {out} stderr: {err}");
    let jwks: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(jwks["jwks"]["keys"][0]["kid"], jwks["current_kid"]);
    let (code, _, err) = server
        .micro(
            &["auth", "rules", "list", "--registry", "memory"],
            Some(&token),
        )
        .await;
    assert_eq!(code, 3, "{err}");

    // rules list, table and JSON.
    let (code, out, err) = server.micro(&["auth", "rules", "list"], Some(&token)).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.lines().any(|l| l.starts_with("default ")), "{out}");
    let (code, out, err) = server
        .micro(&["auth", "rules", "list", "--output", "json"], Some(&token))
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let rules: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rules.as_array().unwrap().len(), 5);
    assert_eq!(rules[4]["id"], "default");
    assert_eq!(rules[4]["priority"], 0);

    // Every command sends MICRO_AUTH_TOKEN: kv with the default rule gone.
    let (code, out, err) = server
        .micro(&["auth", "rules", "delete", "default"], Some(&token))
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let (code, _, err) = server.micro(&["kv", "get", "k"], None).await;
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("UNAUTHENTICATED") || err.contains("authentication"),
        "{err}"
    );
    let (code, out, err) = server
        .micro(
            &[
                "auth",
                "rules",
                "create",
                "admins",
                "--scope",
                "admin",
                "--priority",
                "10",
            ],
            Some(&token),
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let (code, out, err) = server.micro(&["kv", "get", "k"], Some(&token)).await;
    // A missing key is exit 1 with its own message, not a refusal.
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(!err.contains("UNAUTHENTICATED"), "{err}");
    server.stop().await;
}
