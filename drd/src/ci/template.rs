//! The standby pipeline's template read as data: its CodeBuild projects and its pipeline, with
//! the intrinsic functions it uses resolved (`Ref`, `Fn::Sub`, `Fn::GetAtt X.Arn`), turned into
//! the CodeBuild and CodePipeline API's own shapes.
//!
//! One source of truth: on AWS CloudFormation creates these resources from the template; in the
//! lab, whose CloudFormation (moto) skips `AWS::CodePipeline::Pipeline` and
//! `AWS::CodeBuild::Project`, `drd ci install` creates them through the APIs from exactly these
//! shapes, and a test compares what the lab then serves with them.

use crate::error::{ConfigError, Error, Result};
use aws_sdk_codepipeline::types as cp;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use yaml_serde::Value;

/// What `Ref` and `Fn::GetAtt` resolve to.
#[derive(Debug, Default, Clone)]
pub struct Context {
    pub parameters: BTreeMap<String, String>,
    /// Logical id -> physical id (the stack's resources).
    pub physical: BTreeMap<String, String>,
    /// Logical id -> ARN (`Fn::GetAtt X.Arn`).
    pub arns: BTreeMap<String, String>,
    pub region: String,
    pub account: String,
    pub partition: String,
}

pub struct ParsedTemplate {
    pub shown: String,
    doc: Value,
}

impl ParsedTemplate {
    pub fn parse(body: &str, shown: &str) -> std::result::Result<Self, ConfigError> {
        let doc: Value = yaml_serde::from_str(body).map_err(|e| {
            let mut err = ConfigError::new(shown, format!("not valid YAML: {e}"))
                .hint("fix the template (cfn-lint shows more)");
            if let Some(loc) = e.location() {
                err = err.at(loc.line(), loc.column());
            }
            err
        })?;
        Ok(Self {
            shown: shown.to_string(),
            doc,
        })
    }

    /// Logical ids of the resources of `kind` (e.g. `AWS::CodeBuild::Project`), in file order.
    pub fn resources_of(&self, kind: &str) -> Vec<String> {
        self.doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .filter_map(|(k, _)| k.as_str().map(str::to_string))
            .collect()
    }

    /// Declared parameters with their defaults.
    pub fn parameter_defaults(&self) -> BTreeMap<String, Option<String>> {
        self.doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str()?.to_string(),
                    v.get("Default").map(|d| scalar(d).unwrap_or_default()),
                ))
            })
            .collect()
    }

    /// One resolved property of a resource (`None` when absent or unresolvable).
    pub fn property(&self, logical: &str, key: &str, ctx: &Context) -> Option<Json> {
        let v = self
            .doc
            .get("Resources")?
            .get(logical)?
            .get("Properties")?
            .get(key)?;
        resolve(v, ctx).ok()
    }

    /// The resolved `Properties` of a resource, as JSON.
    pub fn properties(&self, logical: &str, ctx: &Context) -> Result<Json> {
        let props = self
            .doc
            .get("Resources")
            .and_then(|r| r.get(logical))
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| {
                Error::from(ConfigError::new(
                    &self.shown,
                    format!("resource {logical} has no Properties"),
                ))
            })?;
        resolve(props, ctx).map_err(|m| {
            ConfigError::new(&self.shown, format!("{logical}: {m}"))
                .field(format!("Resources.{logical}.Properties"))
                .hint("the lab resolves Ref, Fn::Sub (string form) and Fn::GetAtt X.Arn only")
                .into()
        })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn reference(name: &str, ctx: &Context) -> std::result::Result<String, String> {
    match name {
        "AWS::Region" => return Ok(ctx.region.clone()),
        "AWS::AccountId" => return Ok(ctx.account.clone()),
        "AWS::Partition" => return Ok(ctx.partition.clone()),
        "AWS::URLSuffix" => return Ok("amazonaws.com".into()),
        _ => {}
    }
    if let Some((res, attr)) = name.split_once('.') {
        return match (attr, ctx.arns.get(res)) {
            ("Arn", Some(a)) => Ok(a.clone()),
            _ => Err(format!("cannot resolve ${{{name}}}")),
        };
    }
    ctx.parameters
        .get(name)
        .or_else(|| ctx.physical.get(name))
        .cloned()
        .ok_or_else(|| format!("Ref {name}: no such parameter or resource"))
}

fn sub(s: &str, ctx: &Context) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
        let name = &after[..j];
        if let Some(lit) = name.strip_prefix('!') {
            out.push_str(&format!("${{{lit}}}"));
        } else {
            out.push_str(&reference(name, ctx)?);
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn get_att(v: &Value, ctx: &Context) -> std::result::Result<String, String> {
    let (res, attr) = match v {
        Value::String(s) => s
            .split_once('.')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| format!("Fn::GetAtt {s:?} is not Resource.Attribute"))?,
        Value::Sequence(l) if l.len() == 2 => (
            scalar(&l[0]).unwrap_or_default(),
            scalar(&l[1]).unwrap_or_default(),
        ),
        _ => return Err("Fn::GetAtt takes Resource.Attribute".into()),
    };
    if attr != "Arn" {
        return Err(format!("Fn::GetAtt {res}.{attr}: only .Arn is resolved"));
    }
    reference(&format!("{res}.Arn"), ctx)
}

fn intrinsic(name: &str, arg: &Value, ctx: &Context) -> std::result::Result<Json, String> {
    match name {
        "Ref" | "!Ref" => Ok(Json::String(reference(
            &scalar(arg).ok_or("Ref takes a name")?,
            ctx,
        )?)),
        "Fn::Sub" | "!Sub" => match arg {
            Value::String(s) => Ok(Json::String(sub(s, ctx)?)),
            _ => Err("Fn::Sub: only the string form is resolved".into()),
        },
        "Fn::GetAtt" | "!GetAtt" => Ok(Json::String(get_att(arg, ctx)?)),
        other => Err(format!("intrinsic function {other} is not resolved")),
    }
}

/// Resolve intrinsic functions in `v`, giving JSON.
pub fn resolve(v: &Value, ctx: &Context) -> std::result::Result<Json, String> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => serde_json::to_value(n).map_err(|e| e.to_string())?,
        Value::String(s) => Json::String(s.clone()),
        Value::Sequence(l) => Json::Array(
            l.iter()
                .map(|x| resolve(x, ctx))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Tagged(t) => intrinsic(&t.tag.to_string(), &t.value, ctx)?,
        Value::Mapping(m) => {
            if m.len() == 1 {
                let (k, a) = m.iter().next().expect("one entry");
                if let Some(k) = k.as_str().filter(|k| *k == "Ref" || k.starts_with("Fn::")) {
                    return intrinsic(k, a, ctx);
                }
            }
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(scalar(k).unwrap_or_default(), resolve(x, ctx)?);
            }
            Json::Object(out)
        }
    })
}

fn text(v: &Json, key: &str) -> Option<String> {
    match v.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn refuse_unknown(v: &Json, known: &[&str], what: &str) -> Result<()> {
    if let Some(k) = v
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .find(|k| !known.contains(&k.as_str()))
    {
        return Err(Error::failed_hint(
            format!("{what}: property {k} is not carried over to the lab's API calls"),
            format!(
                "use only {} (or extend drd's ci/template.rs)",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A CodeBuild project as the API takes it (`CreateProject`), from resolved CFN properties.
pub fn project(p: &Json) -> Result<Json> {
    refuse_unknown(
        p,
        &[
            "Name",
            "Description",
            "Source",
            "Artifacts",
            "Environment",
            "ServiceRole",
            "TimeoutInMinutes",
            "QueuedTimeoutInMinutes",
            "Tags",
        ],
        "AWS::CodeBuild::Project",
    )?;
    let env = p.get("Environment").cloned().unwrap_or(json!({}));
    let vars: Vec<Json> = env
        .get("EnvironmentVariables")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            json!({
                "name": text(v, "Name").unwrap_or_default(),
                "value": text(v, "Value").unwrap_or_default(),
                "type": text(v, "Type").unwrap_or_else(|| "PLAINTEXT".into()),
            })
        })
        .collect();
    let src = p.get("Source").cloned().unwrap_or(json!({}));
    Ok(json!({
        "name": text(p, "Name").unwrap_or_default(),
        "source": {
            "type": text(&src, "Type").unwrap_or_default(),
            "buildspec": text(&src, "BuildSpec").unwrap_or_default(),
        },
        "artifacts": {"type": p.get("Artifacts").and_then(|a| text(a, "Type")).unwrap_or_default()},
        "environment": {
            "type": text(&env, "Type").unwrap_or_default(),
            "image": text(&env, "Image").unwrap_or_default(),
            "computeType": text(&env, "ComputeType").unwrap_or_default(),
            "environmentVariables": vars,
        },
        "serviceRole": text(p, "ServiceRole").unwrap_or_default(),
        "timeoutInMinutes": p.get("TimeoutInMinutes").and_then(|t| text(&json!({"t": t}), "t")).and_then(|t| t.parse::<i64>().ok()).unwrap_or(60),
    }))
}

/// The pipeline declaration (`CreatePipeline`) from resolved CFN properties.
pub fn pipeline(p: &Json) -> Result<cp::PipelineDeclaration> {
    refuse_unknown(
        p,
        &[
            "Name",
            "RoleArn",
            "ArtifactStore",
            "Stages",
            "PipelineType",
            "ExecutionMode",
            "Variables",
            "RestartExecutionOnUpdate",
            "Tags",
        ],
        "AWS::CodePipeline::Pipeline",
    )?;
    let bad = |m: String| Error::failed(format!("AWS::CodePipeline::Pipeline: {m}"));
    let store = p.get("ArtifactStore").cloned().unwrap_or(json!({}));
    let mut b = cp::PipelineDeclaration::builder()
        .name(text(p, "Name").unwrap_or_default())
        .role_arn(text(p, "RoleArn").unwrap_or_default())
        .artifact_store(
            cp::ArtifactStore::builder()
                .r#type(cp::ArtifactStoreType::from(
                    text(&store, "Type").unwrap_or_else(|| "S3".into()).as_str(),
                ))
                .location(text(&store, "Location").unwrap_or_default())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        );
    if let Some(t) = text(p, "PipelineType") {
        b = b.pipeline_type(cp::PipelineType::from(t.as_str()));
    }
    if let Some(m) = text(p, "ExecutionMode") {
        b = b.execution_mode(cp::ExecutionMode::from(m.as_str()));
    }
    for v in p
        .get("Variables")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let mut vb =
            cp::PipelineVariableDeclaration::builder().name(text(v, "Name").unwrap_or_default());
        if let Some(d) = text(v, "DefaultValue") {
            vb = vb.default_value(d);
        }
        if let Some(d) = text(v, "Description") {
            vb = vb.description(d);
        }
        b = b.variables(vb.build().map_err(|e| bad(e.to_string()))?);
    }
    for s in p
        .get("Stages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let mut sb = cp::StageDeclaration::builder().name(text(s, "Name").unwrap_or_default());
        for a in s
            .get("Actions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let t = a.get("ActionTypeId").cloned().unwrap_or(json!({}));
            let mut ab = cp::ActionDeclaration::builder()
                .name(text(a, "Name").unwrap_or_default())
                .action_type_id(
                    cp::ActionTypeId::builder()
                        .category(cp::ActionCategory::from(
                            text(&t, "Category").unwrap_or_default().as_str(),
                        ))
                        .owner(cp::ActionOwner::from(
                            text(&t, "Owner").unwrap_or_default().as_str(),
                        ))
                        .provider(text(&t, "Provider").unwrap_or_default())
                        .version(text(&t, "Version").unwrap_or_default())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                );
            for (k, v) in a
                .get("Configuration")
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                let v = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                ab = ab.configuration(k, v);
            }
            for i in a
                .get("InputArtifacts")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                ab = ab.input_artifacts(
                    cp::InputArtifact::builder()
                        .name(text(i, "Name").unwrap_or_default())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                );
            }
            for o in a
                .get("OutputArtifacts")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                ab = ab.output_artifacts(
                    cp::OutputArtifact::builder()
                        .name(text(o, "Name").unwrap_or_default())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                );
            }
            if let Some(r) = text(a, "RunOrder").and_then(|r| r.parse().ok()) {
                ab = ab.run_order(r);
            }
            sb = sb.actions(ab.build().map_err(|e| bad(e.to_string()))?);
        }
        b = b.stages(sb.build().map_err(|e| bad(e.to_string()))?);
    }
    b.build().map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            parameters: [("PipelineName".to_string(), "p".to_string())].into(),
            physical: [("SourceBucket".to_string(), "src-bucket".to_string())].into(),
            arns: [("BuildRole".to_string(), "arn:aws:iam::1:role/b".to_string())].into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            partition: "aws".into(),
        }
    }

    #[test]
    fn intrinsics_resolve_in_both_forms() {
        let y = "a: !Ref PipelineName\nb: {Ref: SourceBucket}\nc: !Sub '${PipelineName}-test-${AWS::Region}'\nd: !GetAtt BuildRole.Arn\ne: {'Fn::GetAtt': [BuildRole, Arn]}\nf: !Sub 'arn:${AWS::Partition}:x:${AWS::AccountId}:${!Literal}'\n";
        let v: Value = yaml_serde::from_str(y).unwrap();
        let r = resolve(&v, &ctx()).unwrap();
        assert_eq!(r["a"], "p");
        assert_eq!(r["b"], "src-bucket");
        assert_eq!(r["c"], "p-test-us-east-1");
        assert_eq!(r["d"], "arn:aws:iam::1:role/b");
        assert_eq!(r["e"], "arn:aws:iam::1:role/b");
        assert_eq!(r["f"], "arn:aws:x:123456789012:${Literal}");
    }

    #[test]
    fn what_is_not_resolved_is_an_error_naming_it() {
        for y in [
            "a: !Ref Nope",
            "a: !GetAtt BuildRole.Name",
            "a: !Join ['', [x]]",
            "a: {'Fn::Select': [0, [x]]}",
        ] {
            let v: Value = yaml_serde::from_str(y).unwrap();
            assert!(resolve(&v, &ctx()).is_err(), "{y}");
        }
        let e = project(&json!({"Name": "x", "VpcConfig": {}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("VpcConfig"), "{e}");
    }
}
