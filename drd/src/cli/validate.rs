//! `drd validate`: offline checks of the policy and the template it names.

use super::Cli;
use crate::error::Result;
use crate::workload::template::Template;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(cli: &Cli, _args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let template = Template::load(&policy.template_path())?;
    if cli.json() {
        super::print_json(&serde_json::json!({
            "policy": cli.policy,
            "template": policy.template_path(),
            "template_parameters": template.parameters,
            "ok": true,
        }));
    } else {
        println!("policy   {}: ok", cli.policy.display());
        println!(
            "template {}: ok ({} parameters)",
            policy.template_path().display(),
            template.parameters.len()
        );
    }
    Ok(())
}
