//! The protected workload as files: its code package and its CloudFormation template.

pub mod package;
pub mod template;
