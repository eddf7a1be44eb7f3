//! The guardrail policies shipped in packaging/forgeline.example.toml catch
//! the variants they claim to, and let ordinary commands through: each case
//! is one line of the tables, evaluated by the real `Guardrails` over the
//! example file loaded as the server loads it.

use std::path::Path;

use forgeline::config::{Config, Overrides};
use forgeline::guardrails::{Guardrails, Subject};
use forgeline::model::{Stage, Verdict};

/// Tool calls (as the tool stage sees them: the call's JSON) that the
/// `no-destructive-commands` policy must block.
const BLOCKED: &[&str] = &[
    r#"{"cmd":"rm -rf /"}"#,
    r#"{"cmd":"rm -rf /*"}"#,
    r#"{"cmd":"rm -fr /"}"#,
    r#"{"cmd":"rm -r -f /"}"#,
    r#"{"cmd":"rm --recursive --force /"}"#,
    r#"{"cmd":"rm -rf --no-preserve-root /"}"#,
    r#"{"cmd":"rm --no-preserve-root -rf /"}"#,
    r#"{"cmd":"sudo rm -rf / && echo done"}"#,
    r#"{"cmd":"RM -RF /"}"#,
    r#"{"argv":["rm","-rf","/"]}"#,
    r#"{"cmd":"rm -rf ~"}"#,
    r#"{"cmd":"mkfs.ext4 /dev/sda1"}"#,
    r#"{"cmd":"dd if=/dev/zero of=/dev/sda bs=1M"}"#,
];

/// Tool calls it must let through.
const ALLOWED: &[&str] = &[
    r#"{"cmd":"rm -rf /tmp/build"}"#,
    r#"{"cmd":"rm -rf ./target"}"#,
    r#"{"cmd":"rm notes.txt"}"#,
    r#"{"cmd":"ls -la /"}"#,
    r#"{"cmd":"echo 'format the disk' > plan.md"}"#,
    r#"{"cmd":"dd if=in.img of=out.img"}"#,
];

fn example() -> Guardrails {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/forgeline.example.toml");
    let config = Config::load(Some(&path), &Overrides::default()).expect("the example loads");
    Guardrails::new(&config.guardrails)
}

fn blocked_by(g: &Guardrails, text: &str) -> Vec<String> {
    g.evaluate(Subject {
        stage: Stage::Tool,
        queue: "default",
        text,
        tool: Some("bash"),
    })
    .into_iter()
    .filter(|d| d.policy == "no-destructive-commands" && d.verdict == Verdict::Block)
    .map(|d| d.policy)
    .collect()
}

#[test]
fn the_example_deny_pattern_blocks_every_variant_it_claims_and_nothing_else() {
    let g = example();
    let missed: Vec<&str> = BLOCKED
        .iter()
        .copied()
        .filter(|t| blocked_by(&g, t).is_empty())
        .collect();
    assert!(missed.is_empty(), "let through: {missed:#?}");
    let wrongly: Vec<&str> = ALLOWED
        .iter()
        .copied()
        .filter(|t| !blocked_by(&g, t).is_empty())
        .collect();
    assert!(wrongly.is_empty(), "blocked: {wrongly:#?}");
}
