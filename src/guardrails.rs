//! Guardrail policies: checks on what goes into a task (`input`, at submit),
//! what an agent does (`tool`, on a reported tool call, answered at once so
//! the agent can stop) and what comes out (`output`, at completion).
//!
//! A policy yields a verdict (`allow`, `flag`, `block`); forgeline enforces an
//! action (`allowed`, `sent_to_review`, `rejected`). Verdict and action are kept
//! apart so a policy's effect can be measured: `forgeline_guardrail_decisions_total{policy,stage,verdict,action}`.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{Action, CheckKind, Decision, Stage, Verdict};

/// One `[[guardrails]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Stable id (the `policy` label; named in 422s and on review tickets).
    pub id: String,
    /// The check it runs; each kind reads its own field below.
    pub kind: CheckKind,
    /// Stages it runs at.
    pub stages: Vec<Stage>,
    /// What a match yields: `flag` or `block`.
    pub verdict: Verdict,
    /// Queues it applies to (empty: all).
    #[serde(default)]
    pub queues: Vec<String>,
    /// `max_bytes`: the limit.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// `deny_pattern`: the regex.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `allow_tools`: the allowed tool names.
    #[serde(default)]
    pub tools: Vec<String>,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    regex: Option<Regex>,
}

/// Why the guardrail configuration is unusable.
pub fn validate(policies: &[PolicyConfig]) -> Result<(), String> {
    let mut ids = std::collections::HashSet::new();
    for p in policies {
        if p.id.is_empty()
            || p.id.len() > 64
            || !p
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!(
                "guardrails: id {:?} must be 1-64 characters from [A-Za-z0-9_.-]",
                p.id
            ));
        }
        if !ids.insert(&p.id) {
            return Err(format!("guardrails: duplicate id {:?}", p.id));
        }
        if p.stages.is_empty() {
            return Err(format!("guardrails.{}: name at least one stage", p.id));
        }
        if p.verdict == Verdict::Allow {
            return Err(format!(
                "guardrails.{}: verdict must be flag or block",
                p.id
            ));
        }
        match p.kind {
            CheckKind::DenyPattern => {
                let pattern = p
                    .pattern
                    .as_deref()
                    .ok_or_else(|| format!("guardrails.{}: deny_pattern needs pattern", p.id))?;
                Regex::new(pattern)
                    .map_err(|e| format!("guardrails.{}: pattern does not compile: {e}", p.id))?;
            }
            CheckKind::AllowTools if p.stages != [Stage::Tool] => {
                return Err(format!(
                    "guardrails.{}: allow_tools only applies at the tool stage",
                    p.id
                ));
            }
            CheckKind::MaxBytes if p.max_bytes.unwrap_or(0) == 0 => {
                return Err(format!(
                    "guardrails.{}: max_bytes needs max_bytes above 0",
                    p.id
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The compiled policy set.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    policies: Vec<Policy>,
}

/// What one evaluation is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The stage being evaluated; only policies listing it run.
    pub stage: Stage,
    /// The task's queue.
    pub queue: &'a str,
    /// The text checked (payload JSON, tool call JSON, result and output).
    pub text: &'a str,
    /// The tool's name (tool stage).
    pub tool: Option<&'a str>,
}

impl Guardrails {
    /// Compiles validated policies.
    pub fn new(configs: &[PolicyConfig]) -> Guardrails {
        Guardrails {
            policies: configs
                .iter()
                .map(|c| Policy {
                    regex: c.pattern.as_deref().and_then(|p| Regex::new(p).ok()),
                    config: c.clone(),
                })
                .collect(),
        }
    }

    /// The ids of every policy (for pre-registering metric labels).
    pub fn ids(&self) -> Vec<(String, Vec<Stage>)> {
        self.policies
            .iter()
            .map(|p| (p.config.id.clone(), p.config.stages.clone()))
            .collect()
    }

    /// Every applicable policy's decision about `s`, allows included.
    pub fn evaluate(&self, s: Subject<'_>) -> Vec<Decision> {
        let mut out = Vec::new();
        for p in &self.policies {
            let c = &p.config;
            if !c.stages.contains(&s.stage)
                || !(c.queues.is_empty() || c.queues.iter().any(|q| q == s.queue))
            {
                continue;
            }
            let hit: Option<String> = match c.kind {
                CheckKind::MaxBytes => {
                    let max = c.max_bytes.unwrap_or(usize::MAX);
                    (s.text.len() > max)
                        .then(|| format!("{} bytes exceed the limit of {max}", s.text.len()))
                }
                CheckKind::DenyPattern => p
                    .regex
                    .as_ref()
                    .filter(|r| r.is_match(s.text))
                    .map(|_| "matches a denied pattern".to_string()),
                CheckKind::SecretScan => crate::redact::contains_secret(s.text)
                    .map(|name| format!("contains a secret ({name})")),
                CheckKind::AllowTools => match s.tool {
                    Some(t) if !c.tools.iter().any(|a| a == t) => {
                        Some(format!("tool {t:?} is not allowed"))
                    }
                    _ => None,
                },
            };
            let verdict = if hit.is_some() {
                c.verdict
            } else {
                Verdict::Allow
            };
            out.push(Decision {
                policy: c.id.clone(),
                stage: s.stage,
                verdict,
                action: Action::for_verdict(verdict),
                reason: hit.unwrap_or_default(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Vec<PolicyConfig> {
        let toml = r#"
            [[g]]
            id = "size"
            kind = "max_bytes"
            max_bytes = 10
            stages = ["input"]
            verdict = "flag"
            [[g]]
            id = "no-rm"
            kind = "deny_pattern"
            pattern = "rm -rf /"
            stages = ["input", "tool", "output"]
            verdict = "block"
            [[g]]
            id = "secrets"
            kind = "secret_scan"
            stages = ["output"]
            verdict = "flag"
            queues = ["prod"]
            [[g]]
            id = "tools"
            kind = "allow_tools"
            tools = ["read_file", "bash"]
            stages = ["tool"]
            verdict = "block"
        "#;
        #[derive(Deserialize)]
        struct W {
            g: Vec<PolicyConfig>,
        }
        toml::from_str::<W>(toml).unwrap().g
    }

    fn verdicts(g: &Guardrails, s: Subject<'_>) -> Vec<(String, Verdict)> {
        g.evaluate(s)
            .into_iter()
            .map(|d| (d.policy, d.verdict))
            .collect()
    }

    #[test]
    fn each_check_yields_its_verdict_only_where_it_applies() {
        let cfg = policies();
        validate(&cfg).unwrap();
        let g = Guardrails::new(&cfg);
        let input = |text| Subject {
            stage: Stage::Input,
            queue: "q",
            text,
            tool: None,
        };
        assert_eq!(
            verdicts(&g, input("short")),
            [
                ("size".into(), Verdict::Allow),
                ("no-rm".into(), Verdict::Allow)
            ]
        );
        assert_eq!(
            verdicts(&g, input("a long payload")),
            [
                ("size".into(), Verdict::Flag),
                ("no-rm".into(), Verdict::Allow)
            ]
        );
        assert_eq!(
            verdicts(&g, input("rm -rf /")),
            [
                ("size".into(), Verdict::Allow),
                ("no-rm".into(), Verdict::Block)
            ]
        );
        let tool = |name| Subject {
            stage: Stage::Tool,
            queue: "q",
            text: "{}",
            tool: Some(name),
        };
        assert_eq!(
            verdicts(&g, tool("bash")),
            [
                ("no-rm".into(), Verdict::Allow),
                ("tools".into(), Verdict::Allow)
            ]
        );
        assert_eq!(
            verdicts(&g, tool("curl"))[1],
            ("tools".into(), Verdict::Block)
        );
        let out = |queue, text| Subject {
            stage: Stage::Output,
            queue,
            text,
            tool: None,
        };
        assert_eq!(
            verdicts(&g, out("prod", "key AKIAIOSFODNN7EXAMPLE"))[1],
            ("secrets".into(), Verdict::Flag)
        );
        assert_eq!(
            verdicts(&g, out("dev", "key AKIAIOSFODNN7EXAMPLE")).len(),
            1,
            "secrets only watches prod"
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut cfg = policies();
        cfg[1].pattern = Some("(".into());
        assert!(validate(&cfg).is_err());
        let mut cfg = policies();
        cfg[3].stages = vec![Stage::Input];
        assert!(validate(&cfg).is_err());
        let mut cfg = policies();
        cfg[1].id = "size".into();
        assert!(validate(&cfg).unwrap_err().contains("duplicate"));
    }
}
