//! The front door: how users reach the service by its name on real HTTPS clients
//! (docs/front-door.md, ARCHITECTURE.md "Front door").
//!
//! A Function URL serves no custom domain (a TLS client asking for `classifier.example.com` gets
//! the `*.lambda-url.<region>.on.aws` certificate), so each region the service runs in gets an
//! **API Gateway HTTP API with a regional custom domain** of the service's name:
//! - the API `<stack>-front-door` with one `AWS_PROXY` integration on the function's `live` alias
//!   (payload format 2.0, the event a Function URL sends, so the function is unchanged), the
//!   `$default` route and the auto-deployed `$default` stage;
//! - a `lambda:InvokeFunction` permission for `apigateway.amazonaws.com` limited to that API;
//! - the custom domain (`[dns] record`) with an ISSUED ACM certificate of that region
//!   (drd never requests certificates: validating one is the domain owner's step), mapped to the
//!   API's `$default` stage.
//!
//! Route 53 failover records (crate::dns) send the name to a region's regional domain target
//! (`d-….execute-api.<region>.amazonaws.com`), with a health check on the API's own endpoint.
//! The Function URL itself is `AWS_IAM`: an unsigned request to it is refused (403).
//!
//! Every call here is to API Gateway, ACM and Lambda in the region being served: regional control
//! planes. Only the record change (crate::dns) needs Route 53's control plane in us-east-1.

use crate::aws::{aws_error, error_code, Aws};
use crate::error::{ConfigError, Error, Result};
use crate::policy::Policy;
use aws_sdk_apigatewayv2::types::{
    DomainNameConfiguration, EndpointType, IntegrationType, ProtocolType, SecurityPolicy,
};
use serde::Serialize;

/// The permission statement that lets the front door's API invoke `live`.
pub const PERMISSION_ID: &str = "drd-front-door";
const STAGE: &str = "$default";
const ROUTE: &str = "$default";

/// One region's front door, as read back from API Gateway.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Door {
    pub region: String,
    pub api_id: String,
    /// The API's own endpoint (`https://<id>.execute-api.<region>.amazonaws.com`): probed by
    /// deploy and restore before users are moved, and the health check's target.
    pub endpoint: String,
    /// The service's name (the custom domain).
    pub domain: String,
    /// The regional domain target the DNS record points at (`d-….execute-api.<region>…`).
    pub target: String,
    pub hosted_zone_id: String,
    pub certificate_arn: String,
    /// The `live` alias ARN the integration invokes.
    pub integration_uri: String,
}

impl Door {
    /// The host Route 53's health check requests (the API's own endpoint).
    pub fn health_host(&self) -> String {
        crate::dns::url_host(&self.endpoint)
    }
}

fn domain(policy: &Policy) -> Result<String> {
    match (&policy.front_door, &policy.dns) {
        (Some(_), Some(d)) => Ok(d.record.get_ref().trim().trim_end_matches('.').to_ascii_lowercase()),
        _ => Err(ConfigError::new(
            policy.path.display().to_string(),
            "the policy describes no front door",
        )
        .field("front_door")
        .hint("add [front_door] kind = \"api-gateway\" and [dns] with the service's name (docs/front-door.md)")
        .into()),
    }
}

pub fn api_name(policy: &Policy) -> String {
    policy
        .front_door
        .as_ref()
        .and_then(|f| f.api_name.clone())
        .unwrap_or_else(|| format!("{}-front-door", policy.stack_name()))
}

/// The front door in `region`, or `None` when its API or domain is not there.
pub async fn view(aws: &Aws, policy: &Policy, region: &str) -> Result<Option<Door>> {
    let name = domain(policy)?;
    let gw = aws.apigatewayv2(region).await;
    let Some((api_id, endpoint)) = find_api(&gw, &api_name(policy)).await? else {
        return Ok(None);
    };
    let Some(cfg) = get_domain(&gw, &name).await? else {
        return Ok(None);
    };
    let mapped = gw
        .get_api_mappings()
        .domain_name(&name)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetApiMappings", e))?
        .items()
        .iter()
        .any(|m| {
            m.api_id() == Some(api_id.as_str())
                && m.stage() == Some(STAGE)
                && m.api_mapping_key().unwrap_or_default().is_empty()
        });
    if !mapped {
        return Ok(None);
    }
    let integration_uri = gw
        .get_integrations()
        .api_id(&api_id)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetIntegrations", e))?
        .items()
        .iter()
        .find_map(|i| i.integration_uri().map(str::to_string))
        .unwrap_or_default();
    Ok(Some(Door {
        region: region.to_string(),
        api_id,
        endpoint,
        domain: name,
        target: cfg
            .api_gateway_domain_name()
            .unwrap_or_default()
            .to_string(),
        hosted_zone_id: cfg.hosted_zone_id().unwrap_or_default().to_string(),
        certificate_arn: cfg.certificate_arn().unwrap_or_default().to_string(),
        integration_uri,
    }))
}

async fn find_api(
    gw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<Option<(String, String)>> {
    // API names are not unique: two found means two writers raced (a deploy and a restore in
    // one region), and which one users get would be a guess. Refuse, naming both.
    let mut token = None;
    let mut found = vec![];
    loop {
        let out = gw
            .get_apis()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "GetApis", e))?;
        found.extend(
            out.items()
                .iter()
                .filter(|a| a.name() == Some(name))
                .map(|a| {
                    (
                        a.api_id().unwrap_or_default().to_string(),
                        a.api_endpoint().unwrap_or_default().to_string(),
                    )
                }),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    if found.len() > 1 {
        let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        return Err(Error::failed_hint(
            format!("{} APIs are named {name}: {}", found.len(), ids.join(", ")),
            "delete the one the custom domain is not mapped to (aws apigatewayv2 get-api-mappings, delete-api), then run again",
        ));
    }
    Ok(found.pop())
}

async fn get_domain(
    gw: &aws_sdk_apigatewayv2::Client,
    name: &str,
) -> Result<Option<DomainNameConfiguration>> {
    match gw.get_domain_name().domain_name(name).send().await {
        Ok(o) => Ok(o.domain_name_configurations().first().cloned()),
        Err(e) if error_code(&e) == Some("NotFoundException") => Ok(None),
        Err(e) => Err(aws_error("apigatewayv2", "GetDomainName", e)),
    }
}

/// An ISSUED ACM certificate in `region` that covers `name` (exactly or by a wildcard).
pub async fn certificate(aws: &Aws, region: &str, name: &str) -> Result<String> {
    let acm = aws.acm(region).await;
    // ListCertificates gives only RSA 1024/2048 keys unless asked for the others.
    use aws_sdk_acm::types::KeyAlgorithm as K;
    let includes = aws_sdk_acm::types::Filters::builder()
        .set_key_types(Some(vec![
            K::Rsa1024,
            K::Rsa2048,
            K::Rsa3072,
            K::Rsa4096,
            K::EcPrime256v1,
            K::EcSecp384r1,
            K::EcSecp521r1,
        ]))
        .build();
    let mut token = None;
    loop {
        let out = acm
            .list_certificates()
            .certificate_statuses(aws_sdk_acm::types::CertificateStatus::Issued)
            .includes(includes.clone())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| aws_error("acm", "ListCertificates", e))?;
        for c in out.certificate_summary_list() {
            let mut names: Vec<&str> = c
                .subject_alternative_name_summaries()
                .iter()
                .map(String::as_str)
                .collect();
            names.extend(c.domain_name());
            if names.iter().any(|n| covers(n, name)) {
                if let Some(arn) = c.certificate_arn() {
                    return Ok(arn.to_string());
                }
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Err(Error::failed_hint(
        format!("{region} has no ISSUED ACM certificate for {name}: the front door's custom domain needs one in each region it serves"),
        format!("request and validate one before the outage: aws acm request-certificate --region {region} --domain-name {name} --validation-method DNS (docs/front-door.md)"),
    ))
}

/// Whether a certificate name (`a.example.com` or `*.example.com`) covers `host`.
pub fn covers(cert_name: &str, host: &str) -> bool {
    let (c, h) = (cert_name.to_ascii_lowercase(), host.to_ascii_lowercase());
    match c.strip_prefix("*.") {
        Some(parent) => h.split_once('.').is_some_and(|(_, rest)| rest == parent),
        None => c == h,
    }
}

/// Create what is missing of the front door in `region` and read it back; returns the door and
/// what changed (empty when nothing did).
pub async fn ensure(aws: &Aws, policy: &Policy, region: &str) -> Result<(Door, Vec<String>)> {
    let name = domain(policy)?;
    let mut changed = vec![];
    let lambda = aws.lambda(region).await;
    let alias = lambda
        .get_alias()
        .function_name(policy.function_name())
        .name(crate::lambda::LIVE_ALIAS)
        .send()
        .await
        .map_err(|e| aws_error("lambda", "GetAlias", e))?;
    let alias_arn = alias.alias_arn().unwrap_or_default().to_string();
    let account = alias_arn.split(':').nth(4).unwrap_or_default().to_string();
    let gw = aws.apigatewayv2(region).await;
    let api = api_name(policy);
    let api_id = match find_api(&gw, &api).await? {
        Some((id, _)) => id,
        None => {
            let out = gw
                .create_api()
                .name(&api)
                .protocol_type(ProtocolType::Http)
                .tags("drd:stack", policy.stack_name())
                .send()
                .await
                .map_err(|e| aws_error("apigatewayv2", "CreateApi", e))?;
            changed.push(format!("API {api} created"));
            out.api_id().unwrap_or_default().to_string()
        }
    };
    let integration = ensure_integration(&gw, &api_id, &alias_arn, &mut changed).await?;
    ensure_route(&gw, &api_id, &integration, &mut changed).await?;
    let stages = gw
        .get_stages()
        .api_id(&api_id)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetStages", e))?;
    if !stages.items().iter().any(|s| s.stage_name() == Some(STAGE)) {
        gw.create_stage()
            .api_id(&api_id)
            .stage_name(STAGE)
            .auto_deploy(true)
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "CreateStage", e))?;
        changed.push("stage $default created".into());
    }
    let source_arn = format!("arn:aws:execute-api:{region}:{account}:{api_id}/*");
    // Read first: the statement may be there already (an emulator may not refuse a duplicate),
    // or name an API that was deleted and made again.
    match permission_source(&lambda, policy.function_name()).await? {
        Some(s) if s == source_arn => {}
        found => {
            if found.is_some() {
                lambda
                    .remove_permission()
                    .function_name(policy.function_name())
                    .qualifier(crate::lambda::LIVE_ALIAS)
                    .statement_id(PERMISSION_ID)
                    .send()
                    .await
                    .map_err(|e| aws_error("lambda", "RemovePermission", e))?;
            }
            add_permission(&lambda, policy.function_name(), &source_arn).await?;
            changed.push("permission for the API to invoke live".into());
        }
    }
    if get_domain(&gw, &name).await?.is_none() {
        let cert = certificate(aws, region, &name).await?;
        let cfg = DomainNameConfiguration::builder()
            .certificate_arn(cert)
            .endpoint_type(EndpointType::Regional)
            .security_policy(SecurityPolicy::Tls12)
            .build();
        gw.create_domain_name()
            .domain_name(&name)
            .domain_name_configurations(cfg)
            .tags("drd:stack", policy.stack_name())
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "CreateDomainName", e))?;
        changed.push(format!("custom domain {name} created"));
    }
    ensure_mapping(&gw, &name, &api_id, &mut changed).await?;
    let door = view(aws, policy, region).await?.ok_or_else(|| {
        Error::failed(format!(
            "read-back: the front door in {region} is not complete after creating it"
        ))
    })?;
    if door.target.is_empty() {
        return Err(Error::failed(format!(
            "API Gateway gave the custom domain {name} in {region} no regional target (ApiGatewayDomainName)"
        )));
    }
    Ok((door, changed))
}

/// Delete the front door in `region` (the custom domain, with its mappings, and the API); what
/// was deleted. Used when a standby is retired: a front door without its function answers 5xx.
pub async fn remove(aws: &Aws, policy: &Policy, region: &str) -> Result<Vec<String>> {
    let name = domain(policy)?;
    let gw = aws.apigatewayv2(region).await;
    let mut gone = vec![];
    if get_domain(&gw, &name).await?.is_some() {
        gw.delete_domain_name()
            .domain_name(&name)
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "DeleteDomainName", e))?;
        gone.push(format!("custom domain {name} deleted"));
    }
    if let Some((id, _)) = find_api(&gw, &api_name(policy)).await? {
        gw.delete_api()
            .api_id(&id)
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "DeleteApi", e))?;
        gone.push(format!("API {id} deleted"));
    }
    Ok(gone)
}

/// The source ARN of the front door's permission statement on `live`, if there is one.
async fn permission_source(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<Option<String>> {
    let out = match lambda
        .get_policy()
        .function_name(function)
        .qualifier(crate::lambda::LIVE_ALIAS)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_error("lambda", "GetPolicy", e)),
    };
    let doc: serde_json::Value =
        serde_json::from_str(out.policy().unwrap_or("{}")).unwrap_or_default();
    Ok(doc["Statement"].as_array().and_then(|st| {
        st.iter().find(|s| s["Sid"] == PERMISSION_ID).map(|s| {
            s["Condition"]["ArnLike"]["AWS:SourceArn"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    }))
}

async fn add_permission(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    source_arn: &str,
) -> Result<()> {
    match lambda
        .add_permission()
        .function_name(function)
        .qualifier(crate::lambda::LIVE_ALIAS)
        .statement_id(PERMISSION_ID)
        .action("lambda:InvokeFunction")
        .principal("apigateway.amazonaws.com")
        .source_arn(source_arn)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("ResourceConflictException") => Ok(()),
        Err(e) => Err(aws_error("lambda", "AddPermission", e)),
    }
}

async fn ensure_integration(
    gw: &aws_sdk_apigatewayv2::Client,
    api_id: &str,
    alias_arn: &str,
    changed: &mut Vec<String>,
) -> Result<String> {
    let out = gw
        .get_integrations()
        .api_id(api_id)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetIntegrations", e))?;
    if let Some(i) = out
        .items()
        .iter()
        .find(|i| i.integration_uri() == Some(alias_arn))
    {
        return Ok(i.integration_id().unwrap_or_default().to_string());
    }
    let out = gw
        .create_integration()
        .api_id(api_id)
        .integration_type(IntegrationType::AwsProxy)
        .integration_uri(alias_arn)
        .payload_format_version("2.0")
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "CreateIntegration", e))?;
    changed.push(format!("integration on {alias_arn}"));
    Ok(out.integration_id().unwrap_or_default().to_string())
}

async fn ensure_route(
    gw: &aws_sdk_apigatewayv2::Client,
    api_id: &str,
    integration: &str,
    changed: &mut Vec<String>,
) -> Result<()> {
    let target = format!("integrations/{integration}");
    let out = gw
        .get_routes()
        .api_id(api_id)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetRoutes", e))?;
    match out.items().iter().find(|r| r.route_key() == Some(ROUTE)) {
        Some(r) if r.target() == Some(target.as_str()) => {}
        Some(r) => {
            gw.update_route()
                .api_id(api_id)
                .route_id(r.route_id().unwrap_or_default())
                .target(&target)
                .send()
                .await
                .map_err(|e| aws_error("apigatewayv2", "UpdateRoute", e))?;
            changed.push("route $default retargeted".into());
        }
        None => {
            gw.create_route()
                .api_id(api_id)
                .route_key(ROUTE)
                .target(&target)
                .send()
                .await
                .map_err(|e| aws_error("apigatewayv2", "CreateRoute", e))?;
            changed.push("route $default created".into());
        }
    }
    Ok(())
}

async fn ensure_mapping(
    gw: &aws_sdk_apigatewayv2::Client,
    name: &str,
    api_id: &str,
    changed: &mut Vec<String>,
) -> Result<()> {
    let out = gw
        .get_api_mappings()
        .domain_name(name)
        .send()
        .await
        .map_err(|e| aws_error("apigatewayv2", "GetApiMappings", e))?;
    let root = out
        .items()
        .iter()
        .find(|m| m.api_mapping_key().unwrap_or_default().is_empty());
    match root {
        Some(m) if m.api_id() == Some(api_id) && m.stage() == Some(STAGE) => {}
        Some(m) => {
            gw.update_api_mapping()
                .domain_name(name)
                .api_mapping_id(m.api_mapping_id().unwrap_or_default())
                .api_id(api_id)
                .stage(STAGE)
                .send()
                .await
                .map_err(|e| aws_error("apigatewayv2", "UpdateApiMapping", e))?;
            changed.push(format!("{name} remapped to the API"));
        }
        None => {
            gw.create_api_mapping()
                .domain_name(name)
                .api_id(api_id)
                .stage(STAGE)
                .send()
                .await
                .map_err(|e| aws_error("apigatewayv2", "CreateApiMapping", e))?;
            changed.push(format!("{name} mapped to the API"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_cover_their_name_or_one_label_under_a_wildcard() {
        assert!(covers("classifier.example.com", "Classifier.example.com"));
        assert!(covers("*.example.com", "classifier.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("other.example.com", "classifier.example.com"));
    }
}
