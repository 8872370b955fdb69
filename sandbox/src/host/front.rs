//! The front door as AWS serves it, for the lab (docs/front-door.md, docs/emulator-gaps.md).
//!
//! moto stores API Gateway HTTP APIs, custom domains and Route 53 records but serves none of
//! them. The function host answers:
//! - `Host: <service name>`: resolved as a client's resolver would, from the Route 53 records in
//!   the emulator (a failover PRIMARY while its health check passes, else the SECONDARY; the
//!   health check is evaluated here, by requesting its target), then the regional domain target
//!   (`d-….execute-api.<region>.amazonaws.com`) to the custom domain of that name in that region,
//!   its API mapping, the API's `$default` route and its Lambda integration;
//! - `Host: <api id>.execute-api.<region>.amazonaws.com`: the API's own endpoint.
//!
//! The integration runs only with the `lambda:InvokeFunction` permission for
//! `apigateway.amazonaws.com` that AWS requires (else 500, as API Gateway answers). A failed
//! region answers nothing here (503), as its endpoints would. These reads go to moto directly,
//! not through the region gate: they are the data plane, which stays up when the global control
//! planes are failed.
//!
//! And an `AWS_IAM` Function URL refuses a request that is not SigV4-signed for `lambda` in its
//! region with 403, as AWS does (the lab checks the signature's presence and scope, not its
//! value: moto does not verify signatures either).

use super::{error, Host, RunError};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use drd::aws::aws_error;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The regional domain target API Gateway gives a custom domain (moto gives none): stable for a
/// domain in a region, as AWS's is while the domain exists.
pub fn target_of(region: &str, domain: &str) -> String {
    let h = hex::encode(Sha256::digest(format!(
        "{region}/{}",
        domain.to_ascii_lowercase()
    )));
    format!("d-{}.execute-api.{region}.amazonaws.com", &h[..10])
}

/// API Gateway's regional hosted zone ids (for alias records), as AWS documents them.
pub fn hosted_zone_of(region: &str) -> &'static str {
    match region {
        "us-east-1" => "Z1UJRXOUMOOFQ8",
        "us-east-2" => "ZOJJZC49E0EPZ",
        "us-west-1" => "Z2MUQ32089INYE",
        "us-west-2" => "Z2OJLYMUO9EFXC",
        "eu-west-1" => "ZLY8HYME6SFDD",
        "eu-central-1" => "Z1U9ULNL0V5AJ3",
        _ => "Z2OJLYMUO9EFXC",
    }
}

/// moto's answer to an API Gateway v2 domain-name request with what AWS adds to each
/// configuration: `apiGatewayDomainName`, `hostedZoneId`, `domainNameStatus`. `None`: unchanged.
pub fn fix_domain_reply(region: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let fix = |d: &mut Value| {
        let Some(name) = d
            .get("domainName")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return false;
        };
        let mut changed = false;
        if let Some(cfgs) = d
            .get_mut("domainNameConfigurations")
            .and_then(Value::as_array_mut)
        {
            for c in cfgs {
                if c.get("apiGatewayDomainName").is_none() {
                    c["apiGatewayDomainName"] = json!(target_of(region, &name));
                    c["hostedZoneId"] = json!(hosted_zone_of(region));
                    c["domainNameStatus"] = json!("AVAILABLE");
                    changed = true;
                }
            }
        }
        changed
    };
    let changed = match v.get_mut("items").and_then(Value::as_array_mut) {
        Some(items) => items.iter_mut().fold(false, |a, d| fix(d) | a),
        None => fix(&mut v),
    };
    changed.then(|| serde_json::to_vec(&v).expect("JSON"))
}

/// `<api id>.execute-api.<region>.amazonaws.com` -> (api id, region); not a `d-` domain target.
pub fn api_host(host: &str) -> Option<(String, String)> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let mut parts = rest.split('.');
    let (id, kind, region) = (parts.next()?, parts.next()?, parts.next()?);
    (kind == "execute-api" && parts.next().is_none() && !id.starts_with("d-"))
        .then(|| (id.to_string(), region.to_string()))
}

/// Whether a request is SigV4-signed for `lambda` in `region` (presence and scope).
pub fn signed_for_lambda(headers: &HeaderMap, region: &str) -> bool {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    auth.is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 "))
        && crate::gate::credential_scope(auth, None)
            .is_some_and(|(r, s)| r == region && s == "lambda")
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"message": "Forbidden"})),
    )
        .into_response()
}

fn gw_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

/// One request as the front door receives it.
pub struct Req<'a> {
    pub method: Method,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

impl Host {
    /// The Function URL's auth type is AWS_IAM and the request is not signed for it.
    pub(super) async fn url_refuses(
        &self,
        region: &str,
        function: &str,
        headers: &HeaderMap,
    ) -> bool {
        let cfg = self
            .aws
            .lambda(region)
            .await
            .get_function_url_config()
            .function_name(function)
            .qualifier(drd::lambda::LIVE_ALIAS)
            .send()
            .await;
        // Fail closed: a URL whose configuration cannot be read is not served unsigned.
        let open =
            cfg.is_ok_and(|c| c.auth_type() == &aws_sdk_lambda::types::FunctionUrlAuthType::None);
        !open && !signed_for_lambda(headers, region)
    }

    /// A request to the service's name.
    pub(super) async fn serve_name(&self, host: &str, req: Req<'_>) -> Response {
        let target = match self.resolve_name(host).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "Name Not Resolved",
                    &format!("no Route 53 record in the lab answers for {host}"),
                )
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, "Emulator Error", &e),
        };
        let Some(region) = drd::dns::region_of_host(&target) else {
            return error(
                StatusCode::BAD_GATEWAY,
                "Not A Front Door",
                &format!("{host} resolves to {target}, which is no API Gateway domain target"),
            );
        };
        if self.gate.is_failed(&region) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Region Unavailable",
                &format!("{host} resolves to {target}; the sandbox has failed region {region}"),
            );
        }
        let gw = self.aws.apigatewayv2(&region).await;
        let domain = host.trim_end_matches('.').to_ascii_lowercase();
        if gw
            .get_domain_name()
            .domain_name(&domain)
            .send()
            .await
            .is_err()
        {
            return forbidden();
        }
        if target_of(&region, &domain) != target {
            return error(
                StatusCode::BAD_GATEWAY,
                "Name Not Resolved",
                &format!(
                    "{host} resolves to {target}, which no custom domain in {region} answers to"
                ),
            );
        }
        let api = match gw.get_api_mappings().domain_name(&domain).send().await {
            Ok(m) => m
                .items()
                .iter()
                .find(|m| m.api_mapping_key().unwrap_or_default().is_empty())
                .and_then(|m| m.api_id().map(str::to_string)),
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "Emulator Error",
                    &aws_error("apigatewayv2", "GetApiMappings", e).to_string(),
                )
            }
        };
        match api {
            Some(api) => self.serve_api(&region, &api, req).await,
            None => forbidden(),
        }
    }

    /// A request to an API's endpoint: its `$default` route's Lambda integration.
    pub(super) async fn serve_api(&self, region: &str, api: &str, req: Req<'_>) -> Response {
        if self.gate.is_failed(region) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Region Unavailable",
                &format!("the sandbox has failed region {region}"),
            );
        }
        let gw = self.aws.apigatewayv2(region).await;
        let deployed = gw.get_stages().api_id(api).send().await.is_ok_and(|s| {
            s.items()
                .iter()
                .any(|st| st.stage_name() == Some("$default") && st.auto_deploy() == Some(true))
        });
        if !deployed {
            return gw_error(StatusCode::NOT_FOUND, "Not Found");
        }
        let (function, qualifier) = match self.integration(region, api).await {
            Ok(Some(f)) => f,
            Ok(None) => return gw_error(StatusCode::NOT_FOUND, "Not Found"),
            Err(e) => return error(StatusCode::BAD_GATEWAY, "Emulator Error", &e),
        };
        if !self
            .api_may_invoke(region, api, &function, &qualifier)
            .await
        {
            return gw_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        if let Some(r) = crate::fnfaults::admit(self, region, &function, true).await {
            return r;
        }
        match self.run(region, &function, &qualifier).await {
            Ok((port, _)) => {
                let ct = req
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                self.forward(port, req.method, req.path_and_query, &ct, req.body)
                    .await
            }
            // API Gateway answers a failed integration with a bare 5xx message.
            Err(RunError::NotFound(_)) | Err(RunError::Start(_)) | Err(RunError::Aws(_)) => {
                gw_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }

    /// The function and qualifier the API's `$default` route invokes.
    async fn integration(
        &self,
        region: &str,
        api: &str,
    ) -> Result<Option<(String, String)>, String> {
        let gw = self.aws.apigatewayv2(region).await;
        let routes = match gw.get_routes().api_id(api).send().await {
            Ok(r) => r,
            Err(e) => {
                let e = aws_error("apigatewayv2", "GetRoutes", e);
                return match e.aws_code() {
                    Some("NotFoundException") => Ok(None),
                    _ => Err(e.to_string()),
                };
            }
        };
        let Some(id) = routes
            .items()
            .iter()
            .find(|r| r.route_key() == Some("$default"))
            .and_then(|r| r.target())
            .and_then(|t| t.strip_prefix("integrations/"))
            .map(str::to_string)
        else {
            return Ok(None);
        };
        let i = gw
            .get_integration()
            .api_id(api)
            .integration_id(&id)
            .send()
            .await
            .map_err(|e| aws_error("apigatewayv2", "GetIntegration", e).to_string())?;
        let uri = i.integration_uri().unwrap_or_default();
        // `arn:aws:lambda:R:ACCT:function:NAME[:QUALIFIER]`, maybe inside an invocation path.
        let arn = uri
            .find("arn:aws:lambda:")
            .map(|at| uri[at..].trim_end_matches("/invocations"))
            .unwrap_or_default();
        let parts: Vec<&str> = arn.split(':').collect();
        Ok(match parts.as_slice() {
            [_, _, "lambda", _, _, "function", f] => Some((f.to_string(), "$LATEST".into())),
            [_, _, "lambda", _, _, "function", f, q] => Some((f.to_string(), q.to_string())),
            _ => None,
        })
    }

    /// Whether the function's resource policy lets API Gateway invoke it from this API.
    async fn api_may_invoke(
        &self,
        region: &str,
        api: &str,
        function: &str,
        qualifier: &str,
    ) -> bool {
        let lambda = self.aws.lambda(region).await;
        let mut q = lambda.get_policy().function_name(function);
        if qualifier != "$LATEST" {
            q = q.qualifier(qualifier);
        }
        let Ok(p) = q.send().await else {
            return false;
        };
        let doc: Value = serde_json::from_str(p.policy().unwrap_or("{}")).unwrap_or(Value::Null);
        doc["Statement"].as_array().is_some_and(|st| {
            st.iter().any(|s| {
                let principal = &s["Principal"];
                let service = principal["Service"].as_str().or(principal.as_str());
                let source = s["Condition"]["ArnLike"]["AWS:SourceArn"]
                    .as_str()
                    .unwrap_or("*");
                service == Some("apigateway.amazonaws.com")
                    && (source == "*" || source.contains(&format!(":{api}/")))
            })
        })
    }

    /// The value users' resolvers get for `host`: a plain record's, or the failover PRIMARY's
    /// while its health check passes (else the SECONDARY's; both failing: the PRIMARY's, as
    /// Route 53 answers).
    async fn resolve_name(&self, host: &str) -> Result<Option<String>, String> {
        let r53 = self.aws.route53().await;
        let name = drd::policy::fqdn(host);
        let zones = r53
            .list_hosted_zones()
            .send()
            .await
            .map_err(|e| aws_error("route53", "ListHostedZones", e).to_string())?;
        let Some(zone) = zones
            .hosted_zones()
            .iter()
            .filter(|z| {
                let zn = drd::policy::fqdn(z.name());
                name == zn || name.ends_with(&format!(".{zn}"))
            })
            .max_by_key(|z| z.name().len())
        else {
            return Ok(None);
        };
        let sets = r53
            .list_resource_record_sets()
            .hosted_zone_id(zone.id())
            .start_record_name(&name)
            .send()
            .await
            .map_err(|e| aws_error("route53", "ListResourceRecordSets", e).to_string())?;
        use aws_sdk_route53::types::ResourceRecordSetFailover as F;
        let mut plain = None;
        let (mut primary, mut secondary) = (None, None);
        for s in sets.resource_record_sets() {
            if drd::policy::fqdn(s.name()) != name {
                continue;
            }
            let Some(value) = s
                .resource_records()
                .first()
                .map(|r| r.value().trim_end_matches('.').to_ascii_lowercase())
            else {
                continue;
            };
            match s.failover() {
                Some(F::Primary) => {
                    primary = Some((value, s.health_check_id().map(str::to_string)))
                }
                Some(F::Secondary) => {
                    secondary = Some((value, s.health_check_id().map(str::to_string)))
                }
                _ => plain = Some(value),
            }
        }
        if let Some(v) = plain {
            return Ok(Some(v));
        }
        let healthy = |hc: Option<String>| async move {
            match hc {
                Some(id) => self.health_check_passes(&id).await,
                None => true,
            }
        };
        Ok(match (primary, secondary) {
            (Some((p, hc)), Some((s, shc))) => {
                if healthy(hc).await {
                    Some(p)
                } else if healthy(shc).await {
                    Some(s)
                } else {
                    Some(p)
                }
            }
            (Some((p, _)), None) => Some(p),
            (None, Some((s, _))) => Some(s),
            (None, None) => None,
        })
    }

    /// A Route 53 health check, evaluated by requesting its target as Route 53's checkers would,
    /// at most once a second (AWS takes `failure_threshold` x `request_interval` to notice; the
    /// lab about a second). A target that does not answer within 2 s fails, as on AWS.
    async fn health_check_passes(&self, id: &str) -> bool {
        if let Some((ok, at)) = self.health.lock().expect("health").get(id) {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return *ok;
            }
        }
        let ok = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            Box::pin(self.evaluate_health_check(id)),
        )
        .await
        .unwrap_or(false);
        self.health
            .lock()
            .expect("health")
            .insert(id.to_string(), (ok, std::time::Instant::now()));
        ok
    }

    async fn evaluate_health_check(&self, id: &str) -> bool {
        let Ok(out) = self
            .aws
            .route53()
            .await
            .get_health_check()
            .health_check_id(id)
            .send()
            .await
        else {
            return false;
        };
        let Some(cfg) = out.health_check().and_then(|h| h.health_check_config()) else {
            return false;
        };
        if cfg.disabled() == Some(true) {
            return true;
        }
        let fqdn = cfg
            .fully_qualified_domain_name()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let path = cfg.resource_path().unwrap_or("/").to_string();
        let headers = HeaderMap::new();
        let status = match (api_host(&fqdn), fqdn.contains(".lambda-url.")) {
            (Some((api, region)), _) => {
                let req = Req {
                    method: Method::GET,
                    path_and_query: &path,
                    headers: &headers,
                    body: Bytes::new(),
                };
                Box::pin(self.serve_api(&region, &api, req)).await.status()
            }
            // An unsigned GET, as Route 53 sends: an AWS_IAM URL refuses it.
            (None, true) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        };
        let ok = status.is_success() || status.is_redirection();
        ok != (cfg.inverted() == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_replies_get_the_targets_aws_gives() {
        let one = br#"{"domainName":"svc.example.com","domainNameConfigurations":[{"certificateArn":"arn:c","endpointType":"REGIONAL"}]}"#;
        let v: Value =
            serde_json::from_slice(&fix_domain_reply("us-west-2", one).unwrap()).unwrap();
        let c = &v["domainNameConfigurations"][0];
        assert_eq!(
            c["apiGatewayDomainName"],
            json!(target_of("us-west-2", "svc.example.com"))
        );
        assert!(c["apiGatewayDomainName"]
            .as_str()
            .unwrap()
            .ends_with(".execute-api.us-west-2.amazonaws.com"));
        assert_eq!(c["hostedZoneId"], "Z2OJLYMUO9EFXC");
        assert_eq!(c["certificateArn"], "arn:c");
        let list = format!("{{\"items\":[{}]}}", String::from_utf8_lossy(one));
        assert!(fix_domain_reply("us-east-1", list.as_bytes()).is_some());
        // Already complete, or not a domain: unchanged.
        let done = serde_json::to_vec(&v).unwrap();
        assert_eq!(fix_domain_reply("us-west-2", &done), None);
        assert_eq!(fix_domain_reply("us-west-2", b"<html/>"), None);
        assert_ne!(
            target_of("us-west-2", "a.example.com"),
            target_of("us-east-1", "a.example.com")
        );
    }

    #[test]
    fn api_hosts_are_told_from_domain_targets() {
        assert_eq!(
            api_host("abc123.execute-api.us-west-2.amazonaws.com"),
            Some(("abc123".into(), "us-west-2".into()))
        );
        assert_eq!(
            api_host("d-abc123.execute-api.us-west-2.amazonaws.com"),
            None
        );
        assert_eq!(api_host("svc.example.com"), None);
    }

    #[test]
    fn only_a_lambda_signature_for_the_region_passes_an_iam_url() {
        let mut h = HeaderMap::new();
        assert!(!signed_for_lambda(&h, "us-east-1"));
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AK/20261201/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=x".parse().unwrap());
        assert!(signed_for_lambda(&h, "us-east-1"));
        assert!(!signed_for_lambda(&h, "us-west-2"));
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AK/20261201/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x".parse().unwrap());
        assert!(!signed_for_lambda(&h, "us-east-1"));
    }
}
