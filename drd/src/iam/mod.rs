//! Least privilege as a product of the code: every AWS action drd calls is declared per command
//! and per runbook step; `drd iam policy` renders those declarations as IAM policy JSON scoped
//! to the policy's resources, docs/permissions.md is generated from them, and the end-to-end
//! suite refuses any call its command did not declare (`audit`).

pub mod audit;
pub mod caps;
pub mod render;

pub use audit::{actions_of, declare, declare_more, declared, observe};
