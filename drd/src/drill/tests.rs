//! Drill files: the shipped ones parse; each mistake names its file, line, field and fix.

use super::*;

const GOOD: &str = include_str!("../../../runbooks/drills/corrupt-live.toml");

fn parse(t: &str) -> Result<Drill, ConfigError> {
    Drill::parse(t, "d.toml", &["lambda-rollback".to_string()])
}

#[test]
fn the_shipped_drills_parse() {
    let all = load_all(None).unwrap();
    assert!(all.contains_key("corrupt-live"));
    let p = all["corrupt-live"].plan();
    assert_eq!(p.rto, Duration::from_secs(120));
    assert_eq!(p.healthy_after, 3);
}

#[test]
fn mistakes_name_file_line_field_and_fix() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "rto = \"2m\"",
            "rto = \"soon\"",
            "objectives.rto",
            "not a duration",
        ),
        (
            "interval = \"500ms\"",
            "interval = \"10ms\"",
            "steady_state.interval",
            "100ms or more",
        ),
        (
            "kind = \"corrupt-live\"",
            "kind = \"meteor\"",
            "fault.kind",
            "not a fault",
        ),
        (
            "runbook = \"lambda-rollback\"",
            "runbook = \"lambda-rolback\"",
            "recovery.runbook",
            "no runbook",
        ),
        (
            "healthy_after = 3",
            "healthy_after = 0",
            "steady_state.healthy_after",
            "cannot show",
        ),
        (
            "tiers = [\"T0\", \"T1\"]",
            "tiers = [\"T0\", \"T9\"]",
            "steady_state.tiers",
            "not a probe tier",
        ),
    ];
    for (from, to, field, msg) in cases {
        assert!(GOOD.contains(from), "{from}");
        let t = GOOD.replace(from, to);
        let e = parse(&t).unwrap_err();
        let line = t.lines().position(|l| l.contains(to)).unwrap() + 1;
        assert_eq!(e.field.as_deref(), Some(*field), "{e}");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(msg), "{e}");
        assert!(e.hint.is_some(), "{e}");
    }
    let e = parse(&GOOD.replace("[fault]", "[fault]\nspeed = 3")).unwrap_err();
    assert!(e.message.contains("unknown field `speed`"), "{e}");
    assert!(e.line.is_some(), "{e}");
}
