//! The workload's CloudFormation template, read as text (uploaded byte for byte) and checked
//! offline for what drd relies on: the code parameters and one Lambda function.

use crate::error::{ConfigError, Result};
use std::path::Path;
use yaml_serde::Value;

/// Parameters drd sets on every deploy; the template must declare them.
pub const REQUIRED_PARAMETERS: [&str; 3] = ["FunctionName", "CodeBucket", "CodeKey"];
/// Parameters drd sets when the template declares them.
pub const OPTIONAL_PARAMETERS: [&str; 3] = ["ApiKeySecretName", "LlmBaseUrl", "LlmModel"];

#[derive(Debug, Clone)]
pub struct Template {
    pub body: String,
    /// Declared parameter names, in file order.
    pub parameters: Vec<String>,
    /// Parameters declared `NoEcho: true`.
    pub no_echo: Vec<String>,
}

/// The parameters any CloudFormation template (JSON or YAML, any resources) declares `NoEcho`.
/// A template that does not parse is an error: silence here would store a NoEcho value in clear.
pub fn no_echo_parameters(
    body: &str,
    shown: &str,
) -> Result<std::collections::BTreeSet<String>, ConfigError> {
    let doc: Value = yaml_serde::from_str(body).map_err(|e| {
        let mut err = ConfigError::new(shown, format!("the template does not parse: {e}")).hint(
            "NoEcho parameters cannot be told apart; fix the template (cfn-lint) and back up again",
        );
        if let Some(loc) = e.location() {
            err = err.at(loc.line(), loc.column());
        }
        err
    })?;
    if !doc.is_mapping() {
        return Err(
            ConfigError::new(shown, "the template is not a JSON or YAML mapping")
                .hint("a CloudFormation template is an object with Resources"),
        );
    }
    Ok(doc
        .get("Parameters")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter(|(_, v)| {
            v.get("NoEcho").is_some_and(|n| {
                n.as_bool() == Some(true)
                    || n.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
            })
        })
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect())
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let body = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(&shown, format!("cannot read the template: {e}"))
                .field("stack.template")
                .hint("fix stack.template in the policy (relative to the policy file)")
        })?;
        Self::parse(body, &shown)
    }

    pub fn parse(body: String, shown: &str) -> Result<Self, ConfigError> {
        let doc: Value = yaml_serde::from_str(&body).map_err(|e| {
            let mut err = ConfigError::new(shown, format!("not valid YAML: {e}"))
                .hint("fix the YAML syntax (cfn-lint shows more)");
            if let Some(loc) = e.location() {
                err = err.at(loc.line(), loc.column());
            }
            err
        })?;
        let line_of = |key: &str| {
            body.lines()
                .position(|l| l.starts_with(&format!("{key}:")))
                .map(|i| i + 1)
        };
        let located = |key: &str, msg: String, hint: &str| {
            let mut e = ConfigError::new(shown, msg).field(key).hint(hint);
            if let Some(l) = line_of(key) {
                e = e.at(l, 1);
            }
            e
        };
        let Some(map) = doc.as_mapping() else {
            return Err(
                ConfigError::new(shown, "the template is not a YAML mapping").hint(
                    "a CloudFormation template starts with AWSTemplateFormatVersion/Resources",
                ),
            );
        };
        let params = map
            .get("Parameters")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let mut parameters = vec![];
        let mut no_echo = vec![];
        for (k, v) in &params {
            if let Some(name) = k.as_str() {
                parameters.push(name.to_string());
                if v.get("NoEcho").is_some_and(|n| {
                    n.as_bool() == Some(true)
                        || n.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
                }) {
                    no_echo.push(name.to_string());
                }
            }
        }
        for p in REQUIRED_PARAMETERS {
            if !parameters.iter().any(|d| d == p) {
                return Err(located(
                    "Parameters",
                    format!("the template does not declare the parameter {p:?} that drd sets"),
                    "declare FunctionName, CodeBucket and CodeKey (see classifier/stack.yaml)",
                ));
            }
        }
        let resources = map.get("Resources").and_then(Value::as_mapping);
        let Some(resources) = resources else {
            return Err(located(
                "Resources",
                "the template has no Resources section".into(),
                "add the function's resources (see classifier/stack.yaml)",
            ));
        };
        let functions = resources
            .values()
            .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Lambda::Function"))
            .count();
        if functions != 1 {
            return Err(located(
                "Resources",
                format!("the template declares {functions} AWS::Lambda::Function resources; drd protects exactly one"),
                "keep one function per stack",
            ));
        }
        if resources
            .values()
            .any(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Lambda::Url"))
        {
            return Err(located(
                "Resources",
                "the template declares an AWS::Lambda::Url; drd owns the Function URL on alias `live`".into(),
                "remove the AWS::Lambda::Url resource (and any Version/Alias resources)",
            ));
        }
        Ok(Self {
            body,
            parameters,
            no_echo,
        })
    }

    pub fn declares(&self, name: &str) -> bool {
        self.parameters.iter().any(|p| p == name)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_echo_is_read_from_any_template_and_a_broken_one_is_an_error() {
        let json = r#"{"Parameters":{"Pw":{"Type":"String","NoEcho":true},"X":{"Type":"String"}},
            "Resources":{"A":{"Type":"AWS::SQS::Queue"},"B":{"Type":"AWS::SQS::Queue"},"C":{"Type":"AWS::SNS::Topic"}}}"#;
        let got = super::no_echo_parameters(json, "t.json").unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["Pw".to_string()]);
        let yaml = "Parameters:\n  K: {Type: String, NoEcho: 'true'}\nResources: {}\n";
        assert!(super::no_echo_parameters(yaml, "t.yaml")
            .unwrap()
            .contains("K"));
        let e = super::no_echo_parameters("Parameters: [unclosed", "t.yaml").unwrap_err();
        assert!(e.to_string().contains("t.yaml"), "{e}");
        assert!(super::no_echo_parameters("just text", "t.yaml").is_err());
    }

    use super::*;

    #[test]
    fn shipped_template_passes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../classifier/stack.yaml");
        let t = Template::load(&path).unwrap();
        for p in REQUIRED_PARAMETERS.iter().chain(OPTIONAL_PARAMETERS.iter()) {
            assert!(t.declares(p), "{p}");
        }
        assert!(t.no_echo.is_empty());
    }

    #[test]
    fn yaml_error_has_a_line() {
        let e = Template::parse("a: b\n  c: [\n".into(), "t.yaml").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().starts_with("t.yaml:"));
    }

    #[test]
    fn missing_parameter_named() {
        let body = "Parameters:\n  CodeBucket: {Type: String}\nResources:\n  F: {Type: AWS::Lambda::Function}\n";
        let e = Template::parse(body.into(), "t.yaml").unwrap_err();
        assert!(e.message.contains("FunctionName"), "{e}");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn url_resource_refused_and_noecho_found() {
        let body = "Parameters:\n  FunctionName: {Type: String}\n  CodeBucket: {Type: String}\n  CodeKey: {Type: String, NoEcho: true}\nResources:\n  F: {Type: AWS::Lambda::Function}\n  U: {Type: AWS::Lambda::Url}\n";
        let e = Template::parse(body.into(), "t.yaml").unwrap_err();
        assert!(e.message.contains("AWS::Lambda::Url"));
        let ok = body.replace("  U: {Type: AWS::Lambda::Url}\n", "");
        assert_eq!(
            Template::parse(ok, "t.yaml").unwrap().no_echo,
            vec!["CodeKey"]
        );
    }
}
