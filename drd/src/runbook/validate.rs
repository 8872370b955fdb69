//! Parsing and validating one runbook: the strict TOML, then every rule in turn (names, inputs,
//! step ids, each step's action, check, durations and failure policy, references, and the
//! compensation graph). The first mistake stops the parse as one line with file, line, field and
//! a fix.

use super::*;

/// Parse and validate a runbook. `file` is how errors name it.
pub(super) fn parse(text: &str, file: &str) -> Result<Runbook, ConfigError> {
    let raw: RawRunbook = toml::from_str(text).map_err(|e| {
        let mut err = ConfigError::new(file, e.message().trim().to_string());
        if let Some(span) = e.span() {
            err = err.at_offset(text, span.start);
        }
        if e.message().contains("unknown field") {
            err.hint(
                "remove the key or rename it to one of the expected keys (see runbooks/README.md)",
            )
        } else if e.message().contains("missing field") {
            err.hint("add the field (see runbooks/lambda-rollback.toml for a complete example)")
        } else {
            err
        }
    })?;
    let v = Validator { text, file };
    let name = v.name(&raw)?;
    let inputs = v.inputs(&raw)?;
    let index = v.step_ids(&raw)?;
    let steps = raw
        .step
        .iter()
        .map(|s| v.step(&raw, &index, s.get_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    v.references(&raw, &steps, &index, &inputs)?;
    v.compensation_graph(&raw, &steps, &index)?;
    Ok(Runbook {
        name,
        title: raw.title,
        procedure: raw.procedure,
        summary: raw.summary.trim().to_string(),
        inputs,
        steps,
        source: file.to_string(),
    })
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn at(&self, offset: usize, field: &str, msg: String, hint: String) -> ConfigError {
        ConfigError::new(self.file, msg)
            .at_offset(self.text, offset)
            .field(field)
            .hint(hint)
    }

    /// A well-formed name, and at least one step.
    fn name(&self, raw: &RawRunbook) -> Result<String, ConfigError> {
        let (text, file) = (self.text, self.file);
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(at(
                raw.name.span().start,
                "name",
                format!("{name:?} is not a runbook name"),
                "use lowercase letters, digits and '-', e.g. \"lambda-rollback\"".into(),
            ));
        }
        if raw.step.is_empty() {
            return Err(ConfigError::new(file, "the runbook has no steps")
                .at_offset(text, raw.name.span().start)
                .field("step")
                .hint("add [[step]] tables (see runbooks/lambda-rollback.toml)"));
        }
        Ok(name)
    }

    /// Inputs: a required input has no default.
    fn inputs(&self, raw: &RawRunbook) -> Result<BTreeMap<String, Input>, ConfigError> {
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        let mut inputs = BTreeMap::new();
        for (k, v) in &raw.inputs {
            let i = v.get_ref();
            if i.required && i.default.is_some() {
                return Err(at(
                    v.span().start,
                    &format!("inputs.{k}"),
                    "an input cannot be both required and have a default".into(),
                    "drop `required = true` or the default".into(),
                ));
            }
            inputs.insert(
                k.clone(),
                Input {
                    description: i.description.clone(),
                    default: i.default.clone(),
                    required: i.required,
                },
            );
        }
        Ok(inputs)
    }

    /// Step ids: unique, well-formed; id -> position.
    fn step_ids(&self, raw: &RawRunbook) -> Result<BTreeMap<String, usize>, ConfigError> {
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        // Step ids: unique, well-formed.
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in raw.step.iter().enumerate() {
            let id = s.get_ref().id.get_ref();
            let field = format!("step[{i}].id");
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(at(
                    s.get_ref().id.span().start,
                    &field,
                    format!("{id:?} is not a step id"),
                    "use lowercase letters, digits and '-'".into(),
                ));
            }
            if index.insert(id.clone(), i).is_some() {
                return Err(at(
                    s.get_ref().id.span().start,
                    &field,
                    format!("step id {id:?} is used twice"),
                    "give every step a unique id".into(),
                ));
            }
        }
        Ok(index)
    }

    /// One step: a known action with its arguments, a check when it writes, durations, retries
    /// and its failure policy.
    fn step(
        &self,
        raw: &RawRunbook,
        index: &BTreeMap<String, usize>,
        s: &RawStep,
    ) -> Result<Step, ConfigError> {
        let (text, file) = (self.text, self.file);
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        let sid = s.id.get_ref().clone();
        let field = |f: &str| format!("step {sid:?} {f}");
        let Some(spec) = actions::spec(s.action.get_ref()) else {
            return Err(at(
                s.action.span().start,
                &field("action"),
                format!("unknown action {:?}", s.action.get_ref()),
                format!(
                    "use one of: {}",
                    actions::names(false).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let args = check_args(text, file, &field("args"), spec, &s.args, s.action.span())?;
        let (check, check_args) = match &s.check {
            None if spec.writes => {
                return Err(at(
                    s.action.span().start,
                    &field("check"),
                    format!(
                        "action {} changes AWS but the step names no check proving its effect",
                        spec.name
                    ),
                    format!(
                        "add check = \"{}\" with its check_args",
                        spec.suggested_check.unwrap_or("...")
                    ),
                ))
            }
            None => {
                if let Some((k, v)) = s.check_args.iter().next() {
                    return Err(at(
                        v.span().start,
                        &field(&format!("check_args.{k}")),
                        "check_args without a check".into(),
                        "add check = \"...\" or remove check_args".into(),
                    ));
                }
                (None, BTreeMap::new())
            }
            Some(c) => {
                let Some(cspec) = actions::check_spec(c.get_ref()) else {
                    return Err(at(
                        c.span().start,
                        &field("check"),
                        format!("unknown check {:?}", c.get_ref()),
                        format!(
                            "use one of: {}",
                            actions::names(true).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                let a = check_args(
                    text,
                    file,
                    &field("check_args"),
                    cspec,
                    &s.check_args,
                    c.span(),
                )?;
                (Some(cspec.name.to_string()), a)
            }
        };
        let dur = |v: &Option<Spanned<String>>, f: &str, default: Duration| match v {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                Ok(d) if d > MAX_DURATION => Err(at(
                    v.span().start,
                    &field(f),
                    format!("{:?} is longer than a day", v.get_ref()),
                    "use at most \"24h\"; split longer waits into steps".into(),
                )),
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(at(
                    v.span().start,
                    &field(f),
                    "must be longer than zero".into(),
                    "write a duration such as \"30s\" or \"5m\"".into(),
                )),
                Err(e) => Err(at(
                    v.span().start,
                    &field(f),
                    format!("{:?} is not a duration: {e}", v.get_ref()),
                    "write a duration such as \"30s\" or \"5m\"".into(),
                )),
            },
        };
        let timeout = dur(&s.timeout, "timeout", DEFAULT_TIMEOUT)?;
        let backoff = dur(&s.backoff, "backoff", DEFAULT_BACKOFF)?;
        let retries = match &s.retries {
            None => 0,
            Some(r) if *r.get_ref() <= MAX_RETRIES => *r.get_ref(),
            Some(r) => {
                return Err(at(
                    r.span().start,
                    &field("retries"),
                    format!("{} retries is too many", r.get_ref()),
                    format!("use at most {MAX_RETRIES}"),
                ))
            }
        };
        let on_failure = self.on_failure(raw, index, s)?;
        if s.compensation && on_failure == OnFailure::Continue {
            return Err(at(
                s.id.span().start,
                &field("on_failure"),
                "a compensation step cannot continue on failure".into(),
                "use \"stop\" or \"compensate:STEP\"".into(),
            ));
        }
        Ok(Step {
            id: sid.clone(),
            title: s.title.clone(),
            action: spec.name.to_string(),
            args,
            check,
            check_args,
            timeout,
            retries,
            backoff,
            on_failure,
            compensation: s.compensation,
        })
    }

    /// `stop`, `continue` or `compensate:STEP` naming a compensation step.
    fn on_failure(
        &self,
        raw: &RawRunbook,
        index: &BTreeMap<String, usize>,
        s: &RawStep,
    ) -> Result<OnFailure, ConfigError> {
        let sid = s.id.get_ref().clone();
        let field = |f: &str| format!("step {sid:?} {f}");
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        Ok(match &s.on_failure {
            None => OnFailure::Stop,
            Some(v) => match v.get_ref().as_str() {
                "stop" => OnFailure::Stop,
                "continue" => OnFailure::Continue,
                other => match other.strip_prefix("compensate:") {
                    Some(target) => {
                        let Some(&ti) = index.get(target) else {
                            return Err(at(
                                v.span().start,
                                &field("on_failure"),
                                format!("compensation step {target:?} does not exist"),
                                "name a step declared with compensation = true".into(),
                            ));
                        };
                        if !raw.step[ti].get_ref().compensation {
                            return Err(at(
                                v.span().start,
                                &field("on_failure"),
                                format!(
                                    "step {target:?} is a regular step, not a compensation step"
                                ),
                                format!("mark step {target:?} with compensation = true"),
                            ));
                        }
                        OnFailure::Compensate(target.to_string())
                    }
                    None => {
                        return Err(at(
                            v.span().start,
                            &field("on_failure"),
                            format!("{other:?} is not a failure policy"),
                            "use \"stop\", \"continue\" or \"compensate:STEP\"".into(),
                        ))
                    }
                },
            },
        })
    }

    /// References: inputs declared, policy keys known, steps earlier and producing the output.
    /// A compensation step may use the outputs of steps before every step it compensates.
    fn references(
        &self,
        raw: &RawRunbook,
        steps: &[Step],
        index: &BTreeMap<String, usize>,
        inputs: &BTreeMap<String, Input>,
    ) -> Result<(), ConfigError> {
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        let compensated_by = compensated_by(steps);
        // How far each step may look back: a regular step sees the steps before it; a
        // compensation step sees what every step that can trigger it (transitively) sees.
        let mut horizon_of: Vec<usize> = (0..steps.len())
            .map(|i| if steps[i].compensation { usize::MAX } else { i })
            .collect();
        for _ in 0..steps.len() {
            for (i, st) in steps.iter().enumerate() {
                if let OnFailure::Compensate(t) = &st.on_failure {
                    let ti = index[t];
                    horizon_of[ti] = horizon_of[ti].min(horizon_of[i]);
                }
            }
        }
        for (i, st) in steps.iter().enumerate() {
            let raw_step = raw.step[i].get_ref();
            if st.compensation && !compensated_by.contains_key(&st.id) {
                continue; // unreachable: reported below
            }
            // The index before which referenced steps must lie.
            let horizon = if horizon_of[i] == usize::MAX {
                0
            } else {
                horizon_of[i]
            };
            for (map, which) in [
                (&raw_step.args, "args"),
                (&raw_step.check_args, "check_args"),
            ] {
                for (k, v) in map {
                    let Some(sv) = value_to_string(v.get_ref()) else {
                        continue;
                    };
                    let f = format!("step {:?} {which}.{k}", st.id);
                    let parts = parse_refs(&sv)
                        .map_err(|m| at(v.span().start, &f, m, "fix the reference".into()))?;
                    for p in parts.into_iter().filter_map(|p| p.err()) {
                        match p {
                            Ref::Input(n) if !inputs.contains_key(&n) => {
                                return Err(at(
                                    v.span().start,
                                    &f,
                                    format!("input {n:?} is not declared"),
                                    format!("declare it under [inputs.{n}]"),
                                ))
                            }
                            Ref::Policy(key) if !POLICY_KEYS.contains(&key.as_str()) => {
                                return Err(at(
                                    v.span().start,
                                    &f,
                                    format!("policy key {key:?} is unknown"),
                                    format!("use one of: {}", POLICY_KEYS.join(", ")),
                                ))
                            }
                            Ref::Step(sid, out) => {
                                let Some(&j) = index.get(&sid) else {
                                    return Err(at(
                                        v.span().start,
                                        &f,
                                        format!("step {sid:?} does not exist"),
                                        "refer to an earlier step's id".into(),
                                    ));
                                };
                                // A check may read its own step's outputs.
                                let own = which == "check_args" && j == i;
                                if !own && (j >= horizon || steps[j].compensation) {
                                    return Err(at(
                                        v.span().start,
                                        &f,
                                        format!(
                                            "step {sid:?} does not run before step {:?}: a reference \
                                             to a later step is a cycle",
                                            st.id
                                        ),
                                        "refer only to regular steps that come earlier".into(),
                                    ));
                                }
                                let spec = actions::spec(&steps[j].action).expect("checked");
                                if !spec.outputs.contains(&out.as_str()) {
                                    return Err(at(
                                        v.span().start,
                                        &f,
                                        format!(
                                            "step {sid:?} ({}) has no output {out:?}",
                                            spec.name
                                        ),
                                        format!(
                                            "its outputs are: {}",
                                            if spec.outputs.is_empty() {
                                                "none".to_string()
                                            } else {
                                                spec.outputs.join(", ")
                                            }
                                        ),
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The compensation graph: no loops; every compensation step reachable.
    fn compensation_graph(
        &self,
        raw: &RawRunbook,
        steps: &[Step],
        index: &BTreeMap<String, usize>,
    ) -> Result<(), ConfigError> {
        let compensated_by = compensated_by(steps);
        let at = |offset: usize, field: &str, msg: String, hint: String| {
            self.at(offset, field, msg, hint)
        };
        for (i, st) in steps.iter().enumerate() {
            if st.compensation && !compensated_by.contains_key(&st.id) {
                return Err(at(
                    raw.step[i].get_ref().id.span().start,
                    &format!("step {:?}", st.id),
                    "compensation step is unreachable: no step's on_failure names it".into(),
                    format!(
                        "add on_failure = \"compensate:{}\" to the step it undoes, or remove it",
                        st.id
                    ),
                ));
            }
            let mut seen = BTreeSet::from([st.id.clone()]);
            let mut cur = i;
            while let OnFailure::Compensate(t) = &steps[cur].on_failure {
                if !seen.insert(t.clone()) {
                    // Report the edge that closes the loop.
                    let on = raw.step[cur].get_ref().on_failure.as_ref().expect("set");
                    return Err(at(
                        on.span().start,
                        &format!("step {:?} on_failure", steps[cur].id),
                        format!("compensation loops back through step {t:?}"),
                        "a compensation chain must end in a step that stops".into(),
                    ));
                }
                cur = index[t];
            }
        }
        Ok(())
    }
}

/// Compensation step id -> the steps whose failure runs it.
fn compensated_by(steps: &[Step]) -> BTreeMap<String, Vec<usize>> {
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, st) in steps.iter().enumerate() {
        if let OnFailure::Compensate(t) = &st.on_failure {
            by.entry(t.clone()).or_default().push(i);
        }
    }
    by
}

fn value_to_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn check_args(
    text: &str,
    file: &str,
    field: &str,
    spec: &ActionSpec,
    given: &BTreeMap<String, Spanned<toml::Value>>,
    anchor: std::ops::Range<usize>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (k, v) in given {
        if !spec.required.contains(&k.as_str()) && !spec.optional.contains(&k.as_str()) {
            let mut known: Vec<&str> = spec.required.to_vec();
            known.extend(spec.optional);
            return Err(
                ConfigError::new(file, format!("{} takes no argument {k:?}", spec.name))
                    .at_offset(text, v.span().start)
                    .field(format!("{field}.{k}"))
                    .hint(if known.is_empty() {
                        "remove it: this one takes no arguments".to_string()
                    } else {
                        format!("its arguments are: {}", known.join(", "))
                    }),
            );
        }
        let Some(s) = value_to_string(v.get_ref()) else {
            return Err(ConfigError::new(
                file,
                format!("argument {k:?} must be a string, number or boolean"),
            )
            .at_offset(text, v.span().start)
            .field(format!("{field}.{k}"))
            .hint("write it as a string, e.g. \"${steps.observe.live_version}\""));
        };
        out.insert(k.clone(), s);
    }
    for r in spec.required {
        if !out.contains_key(*r) {
            return Err(
                ConfigError::new(file, format!("{} needs the argument {r:?}", spec.name))
                    .at_offset(text, anchor.start)
                    .field(field.to_string())
                    .hint(format!(
                        "add {r} = \"...\" to the step's {}",
                        field.rsplit(' ').next().unwrap_or("args")
                    )),
            );
        }
    }
    Ok(out)
}
