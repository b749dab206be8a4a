//! The tonic service: each RPC of `micro.auth.v1.Auth` on [`AuthService`].

use tonic::{Request, Response, Status};

use super::{AuthService, invalid, source};
use crate::proto::auth::v1::{self as pb, auth_server::Auth};

#[tonic::async_trait]
impl Auth for AuthService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        self.generate(request.into_inner()).await.map(Response::new)
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let accounts = self.list_accounts().await?;
        Ok(Response::new(pb::ListAccountsResponse { accounts }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        self.delete_account(&request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let request = request.into_inner();
        let secret = self.rotate_secret(&request.id, request.secret).await?;
        Ok(Response::new(pb::RotateSecretResponse { secret }))
    }

    async fn token(
        &self,
        request: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let source = source(&request, &self.inner.options);
        self.token(request.into_inner(), source)
            .await
            .map(Response::new)
    }

    async fn inspect(
        &self,
        request: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let token = request.into_inner().token;
        if token.is_empty() {
            return Err(invalid("token is required"));
        }
        self.inspect(&token).await.map(Response::new)
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.revoke(request.into_inner()).await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn list_revocations(
        &self,
        _request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let revocations = self.list_revocations().await?;
        Ok(Response::new(pb::ListRevocationsResponse { revocations }))
    }

    async fn jwks(
        &self,
        _request: Request<pb::JwksRequest>,
    ) -> Result<Response<pb::JwksResponse>, Status> {
        let (jwks, current_kid) = self.jwks().await?;
        Ok(Response::new(pb::JwksResponse {
            jwks,
            current_kid,
            issuer: self.inner.options.issuer.clone(),
            audience: self.inner.options.audience.clone(),
        }))
    }

    async fn rotate_keys(
        &self,
        _request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        self.rotate_keys().await.map(Response::new)
    }

    async fn create_rule(
        &self,
        request: Request<pb::CreateRuleRequest>,
    ) -> Result<Response<pb::CreateRuleResponse>, Status> {
        let rule = request
            .into_inner()
            .rule
            .ok_or_else(|| invalid("rule is required"))?;
        self.create_rule(rule).await?;
        Ok(Response::new(pb::CreateRuleResponse {}))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        self.delete_rule(&request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn list_rules(
        &self,
        _request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let rules = self
            .rules()
            .rules()
            .iter()
            .map(super::super::records::rule_to_proto)
            .collect();
        Ok(Response::new(pb::ListRulesResponse { rules }))
    }
}
