//! Pure transcript logic: find speaker labels, validate an LLM's label -> role mapping, relabel.
//!
//! A label is the text before the first `:` of a line (trimmed). Lines without a `:` and blank
//! lines are kept as they are. Relabelling replaces exactly the label part of a line, so a label
//! that is a prefix of another (`Speaker 1` / `Speaker 10`) can never be confused with it.

use std::collections::{BTreeMap, BTreeSet};

/// The label of one line, if it has one.
pub fn line_label(line: &str) -> Option<&str> {
    let (head, _) = line.split_once(':')?;
    let label = head.trim();
    (!label.is_empty()).then_some(label)
}

/// Distinct labels in order of first appearance.
pub fn labels(transcript: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in transcript.split('\n') {
        if let Some(label) = line_label(line) {
            if seen.insert(label.to_string()) {
                out.push(label.to_string());
            }
        }
    }
    out
}

/// Labels that are not already one of the target roles, in order of first appearance.
pub fn labels_needing_mapping(transcript: &str, roles: &[String]) -> Vec<String> {
    labels(transcript)
        .into_iter()
        .filter(|l| !roles.iter().any(|r| r == l))
        .collect()
}

/// Why an LLM mapping was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("label {0:?} was not mapped to a role")]
    Unmapped(String),
    #[error("mapping names label {0:?}, which is not in the transcript")]
    ExtraLabel(String),
    #[error(
        "label {label:?} was mapped to {role:?}, which is not one of the target roles {roles:?}"
    )]
    UnknownRole {
        label: String,
        role: String,
        roles: Vec<String>,
    },
    #[error("label {0:?} was mapped to a non-string value")]
    NotAString(String),
    #[error("the mapping is not a JSON object")]
    NotAnObject,
}

/// Check a mapping returned by the LLM against the labels that needed one and the target roles.
pub fn validate_mapping(
    mapping: &serde_json::Value,
    needed: &[String],
    roles: &[String],
) -> Result<BTreeMap<String, String>, MappingError> {
    let obj = mapping.as_object().ok_or(MappingError::NotAnObject)?;
    let mut out = BTreeMap::new();
    for (label, role) in obj {
        if !needed.iter().any(|n| n == label) {
            return Err(MappingError::ExtraLabel(label.clone()));
        }
        let role = role
            .as_str()
            .ok_or_else(|| MappingError::NotAString(label.clone()))?;
        if !roles.iter().any(|r| r == role) {
            return Err(MappingError::UnknownRole {
                label: label.clone(),
                role: role.to_string(),
                roles: roles.to_vec(),
            });
        }
        out.insert(label.clone(), role.to_string());
    }
    for label in needed {
        if !out.contains_key(label) {
            return Err(MappingError::Unmapped(label.clone()));
        }
    }
    Ok(out)
}

/// Apply a mapping line by line. Returns the new transcript and how many lines changed.
pub fn relabel(transcript: &str, mapping: &BTreeMap<String, String>) -> (String, usize) {
    let mut changed = 0;
    let lines: Vec<String> = transcript
        .split('\n')
        .map(|line| match line.split_once(':') {
            Some((head, rest)) => match mapping.get(head.trim()) {
                Some(role) => {
                    changed += 1;
                    // Keep whatever indentation preceded the label.
                    let indent = &head[..head.len() - head.trim_start().len()];
                    format!("{indent}{role}:{rest}")
                }
                None => line.to_string(),
            },
            None => line.to_string(),
        })
        .collect();
    (lines.join("\n"), changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roles() -> Vec<String> {
        vec!["Agent".into(), "Customer".into()]
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn labels_in_first_appearance_order_ignoring_blank_and_unlabelled_lines() {
        let t =
            "Speaker 1: hi\n\nno label here\nSpeaker 0: hello\nSpeaker 1: again\n  : empty label";
        assert_eq!(labels(t), vec!["Speaker 1", "Speaker 0"]);
    }

    #[test]
    fn label_is_text_before_first_colon() {
        assert_eq!(line_label("Speaker 0: time is 10:30"), Some("Speaker 0"));
        assert_eq!(line_label("just text"), None);
        assert_eq!(line_label(""), None);
    }

    #[test]
    fn labels_already_roles_need_no_mapping() {
        let t = "Agent: Hello\nCustomer: Hi";
        assert!(labels_needing_mapping(t, &roles()).is_empty());
        let t = "Agent: Hello\nSpeaker 1: Hi";
        assert_eq!(labels_needing_mapping(t, &roles()), vec!["Speaker 1"]);
    }

    #[test]
    fn prefix_labels_are_distinct() {
        let t = "Speaker 1: a\nSpeaker 10: b\nSpeaker 1: c";
        let m = map(&[("Speaker 1", "Agent"), ("Speaker 10", "Customer")]);
        let (out, n) = relabel(t, &m);
        assert_eq!(out, "Agent: a\nCustomer: b\nAgent: c");
        assert_eq!(n, 3);
    }

    #[test]
    fn relabel_keeps_blank_lines_unlabelled_lines_and_rest_of_line() {
        let t = "Speaker 0: at 10:30 ok\n\n(crosstalk)\nSpeaker 1:no space\r\n";
        let m = map(&[("Speaker 0", "Agent"), ("Speaker 1", "Customer")]);
        let (out, n) = relabel(t, &m);
        assert_eq!(
            out,
            "Agent: at 10:30 ok\n\n(crosstalk)\nCustomer:no space\r\n"
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn three_speakers_and_custom_roles() {
        let roles: Vec<String> = vec!["Doctor".into(), "Patient".into(), "Nurse".into()];
        let t = "Speaker 0: a\nSpeaker 1: b\nSpeaker 2: c";
        let needed = labels_needing_mapping(t, &roles);
        let m = validate_mapping(
            &json!({"Speaker 0": "Doctor", "Speaker 1": "Patient", "Speaker 2": "Nurse"}),
            &needed,
            &roles,
        )
        .unwrap();
        assert_eq!(relabel(t, &m).0, "Doctor: a\nPatient: b\nNurse: c");
    }

    #[test]
    fn two_labels_may_share_a_role() {
        let needed = vec!["Speaker 0".to_string(), "Speaker 1".to_string()];
        let m = validate_mapping(
            &json!({"Speaker 0": "Agent", "Speaker 1": "Agent"}),
            &needed,
            &roles(),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn mapping_validation_rejects_each_kind_of_bad_mapping() {
        let needed = vec!["Speaker 0".to_string(), "Speaker 1".to_string()];
        assert_eq!(
            validate_mapping(&json!({"Speaker 0": "Agent"}), &needed, &roles()),
            Err(MappingError::Unmapped("Speaker 1".into()))
        );
        assert_eq!(
            validate_mapping(
                &json!({"Speaker 0": "Agent", "Speaker 1": "Customer", "Speaker 2": "Agent"}),
                &needed,
                &roles()
            ),
            Err(MappingError::ExtraLabel("Speaker 2".into()))
        );
        assert!(matches!(
            validate_mapping(
                &json!({"Speaker 0": "Agent", "Speaker 1": "Manager"}),
                &needed,
                &roles()
            ),
            Err(MappingError::UnknownRole { .. })
        ));
        assert_eq!(
            validate_mapping(
                &json!({"Speaker 0": 1, "Speaker 1": "Agent"}),
                &needed,
                &roles()
            ),
            Err(MappingError::NotAString("Speaker 0".into()))
        );
        assert_eq!(
            validate_mapping(&json!(["Agent"]), &needed, &roles()),
            Err(MappingError::NotAnObject)
        );
    }

    proptest::proptest! {
        /// Relabelling never changes the number of lines or any unlabelled line.
        #[test]
        fn relabel_preserves_line_structure(t in "[A-Za-z0-9 :\n]{0,200}") {
            let m = map(&[("Speaker 0", "Agent"), ("Speaker 1", "Customer")]);
            let (out, _) = relabel(&t, &m);
            let before: Vec<&str> = t.split('\n').collect();
            let after: Vec<&str> = out.split('\n').collect();
            proptest::prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(after.iter()) {
                if line_label(b).map(|l| !m.contains_key(l)).unwrap_or(true) {
                    proptest::prop_assert_eq!(b, a);
                }
            }
        }
    }
}
