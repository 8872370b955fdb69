//! `drd validate`: offline checks of the policy, the template it names, and the runbooks.

use super::Cli;
use crate::error::Result;
use crate::workload::template::Template;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  drd validate\n  drd --policy policies/classifier.toml validate"
)]
pub struct Args {}

pub async fn run(cli: &Cli, _args: &Args) -> Result<()> {
    let policy = cli.load_policy()?;
    let template = Template::load(&policy.template_path())?;
    let runbooks = crate::runbook::load_all(Some(&cli.runbooks))?;
    if cli.json() {
        super::print_json(&serde_json::json!({
            "policy": cli.policy,
            "template": policy.template_path(),
            "template_parameters": template.parameters,
            "runbooks": runbooks.values().map(|r| serde_json::json!({"name": r.name, "source": r.source})).collect::<Vec<_>>(),
            "ok": true,
        }));
    } else {
        println!("policy   {}: ok", cli.policy.display());
        println!(
            "template {}: ok ({} parameters)",
            policy.template_path().display(),
            template.parameters.len()
        );
        for r in runbooks.values() {
            println!(
                "runbook  {}: ok ({} steps, {})",
                r.name,
                r.steps.len(),
                r.source
            );
        }
    }
    Ok(())
}
