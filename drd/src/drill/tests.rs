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

#[test]
fn on_aws_a_drill_needs_its_target_named_and_production_an_explicit_yes() {
    let mut p = crate::policy::Policy::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/classifier.toml"
        ))
        .unwrap(),
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/classifier.toml"
        )),
    )
    .unwrap();
    let name = p.stack_name().to_string();
    let e = target_guard(&p, true, None, false).unwrap_err();
    assert!(e.to_string().contains(&format!("--stack {name}")), "{e}");
    let e = target_guard(&p, true, Some(&name), false).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("stack.production"), "{e}");
    assert!(e.to_string().contains("--i-mean-production"), "{e}");
    target_guard(&p, true, Some(&name), true).unwrap();
    let e = target_guard(&p, false, Some("other"), false).unwrap_err();
    assert!(e.to_string().contains("not the policy's stack"), "{e}");
    // The lab needs neither; a staging stack needs no yes.
    target_guard(&p, false, None, false).unwrap();
    p.stack.production = false;
    target_guard(&p, true, Some(&name), false).unwrap();
}

#[test]
fn a_rehearsal_and_the_fault_none_go_together_and_nothing_else_does() {
    let rehearsal = include_str!("../../../runbooks/drills/restore-rehearsal.toml");
    let d = parse(rehearsal).unwrap();
    assert!(d.recovery.rehearsal.is_some());
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "kind = \"none\"",
            "kind = \"corrupt-live\"",
            "fault.kind",
            "injects no fault",
        ),
        (
            "rehearsal = \"restore\"",
            "rehearsal = \"restart\"",
            "recovery.rehearsal",
            "not one drd can run",
        ),
        (
            "rehearsal = \"restore\"",
            "rehearsal = \"restore\"\nrunbook = \"lambda-rollback\"",
            "recovery.rehearsal",
            "runs no runbook",
        ),
    ];
    for (from, to, field, msg) in cases {
        assert!(rehearsal.contains(from), "{from}");
        let e = parse(&rehearsal.replace(from, to)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(*field), "{e}");
        assert!(e.to_string().contains(msg), "{e}");
        assert!(e.line.is_some() && e.hint.is_some(), "{e}");
    }
    // `none` breaks nothing: only a rehearsal may use it.
    let e = parse(&GOOD.replace("kind = \"corrupt-live\"", "kind = \"none\"")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("fault.kind"), "{e}");
    assert!(e.to_string().contains("only a rehearsal"), "{e}");
}

#[test]
fn function_faults_take_their_own_knobs_and_no_others() {
    let with = |fault: &str| GOOD.replace("kind = \"corrupt-live\"", fault);
    let d = parse(&with("kind = \"errors\"\nrate = 0.5\nduration = \"4s\"")).unwrap();
    assert_eq!(d.plan().fault.rate, Some(0.5));
    assert_eq!(d.plan().fault.duration, Some(Duration::from_secs(4)));
    let d = parse(&with("kind = \"latency\"\nlatency = \"6s\"")).unwrap();
    assert_eq!(d.plan().fault.latency, Some(Duration::from_secs(6)));
    assert!(parse(&with("kind = \"throttle\"")).is_ok());
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "kind = \"latency\"",
            "kind = \"latency\"",
            "fault.latency",
            "needs latency",
        ),
        (
            "kind = \"errors\"\nrate = 1.5",
            "rate = 1.5",
            "fault.rate",
            "not a share",
        ),
        (
            "kind = \"throttle\"\nrate = 0.5",
            "rate = 0.5",
            "fault.rate",
            "for errors faults",
        ),
        (
            "kind = \"throttle\"\nduration = \"5s\"",
            "duration = \"5s\"",
            "fault.duration",
            "does not lift by itself",
        ),
        (
            "kind = \"errors\"\nlatency = \"1s\"",
            "latency = \"1s\"",
            "fault.latency",
            "for latency faults",
        ),
    ];
    for (fault, line_of, field, msg) in cases {
        let t = with(fault);
        let e = parse(&t).unwrap_err();
        let line = t.lines().position(|l| l.contains(line_of)).unwrap() + 1;
        assert_eq!(e.field.as_deref(), Some(*field), "{e}");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(msg), "{e}");
        assert!(e.hint.is_some(), "{e}");
    }
}

#[test]
fn an_rpo_objective_is_a_duration() {
    assert_eq!(
        parse(GOOD).unwrap().plan().rpo,
        Some(Duration::from_secs(60))
    );
    let t = GOOD.replace("rpo = \"1m\"", "rpo = \"a while\"");
    let e = parse(&t).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("objectives.rpo"), "{e}");
    let line = t.lines().position(|l| l.contains("a while")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
}

#[test]
fn a_probe_threshold_lets_a_fault_be_seen() {
    let with = |n: u32| {
        GOOD.replace(
            "max_duration = \"5m\"",
            &format!("max_duration = \"5m\"\nmax_unhealthy_samples = {n}"),
        )
    };
    assert_eq!(parse(&with(20)).unwrap().plan().max_unhealthy, Some(20));
    let t = with(1);
    let e = parse(&t).unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("stop_conditions.max_unhealthy_samples"),
        "{e}"
    );
    let line = t
        .lines()
        .position(|l| l.starts_with("max_unhealthy"))
        .unwrap()
        + 1;
    assert_eq!(e.line, Some(line), "{e}");
}
