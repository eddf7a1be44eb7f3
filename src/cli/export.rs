//! `forgeline export`: write the ops kit that ships inside the binary — alert
//! rules and Alertmanager routing, Grafana dashboards and provisioning, k6
//! scripts, example configs and the systemd unit — so that whoever installed
//! only the binary (`pip install`, `cargo install`) has it too.
//!
//! The files are the repository's own, embedded at build time (rust-embed;
//! build.rs makes cargo rebuild when one changes), and written under the same
//! relative paths: `DIR/alerts/forgeline.rules.yml` is byte for byte the
//! repository's `alerts/forgeline.rules.yml`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use clap::{Args, ValueEnum};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "alerts/"]
#[prefix = "alerts/"]
struct AlertFiles;

#[derive(Embed)]
#[folder = "dashboards/"]
#[prefix = "dashboards/"]
struct DashboardFiles;

// k6 writes run summaries to loadtest/results/ by default: output, not kit.
#[derive(Embed)]
#[folder = "loadtest/"]
#[prefix = "loadtest/"]
#[exclude = "results/*"]
struct LoadtestFiles;

#[derive(Embed)]
#[folder = "packaging/"]
#[prefix = "packaging/"]
#[exclude = "*.service"]
struct ConfigFiles;

#[derive(Embed)]
#[folder = "packaging/"]
#[prefix = "packaging/"]
#[include = "*.service"]
struct SystemdFiles;

/// A part of the ops kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kit {
    /// Recording and alerting rules with their promtool tests, Alertmanager
    /// config and its routes table (alerts/).
    Alerts,
    /// Grafana dashboards and provisioning files (dashboards/).
    Dashboards,
    /// k6 scripts: smoke, load, stress, soak, SSE, review (loadtest/).
    Loadtest,
    /// The example server config, a Prometheus scrape config and an
    /// OpenTelemetry Collector config (packaging/).
    Config,
    /// The hardened systemd unit (packaging/forgeline.service).
    Systemd,
    /// Every part above (also what naming no part means).
    All,
}

impl Kit {
    const PARTS: [Kit; 5] = [
        Kit::Alerts,
        Kit::Dashboards,
        Kit::Loadtest,
        Kit::Config,
        Kit::Systemd,
    ];

    /// The embedded files of this part, by relative path (`All` is expanded
    /// by the caller).
    fn files(self) -> Vec<(String, Cow<'static, [u8]>)> {
        fn collect<E: Embed>() -> Vec<(String, Cow<'static, [u8]>)> {
            E::iter()
                .filter_map(|path| E::get(&path).map(|f| (path.into_owned(), f.data)))
                .collect()
        }
        match self {
            Kit::Alerts => collect::<AlertFiles>(),
            Kit::Dashboards => collect::<DashboardFiles>(),
            Kit::Loadtest => collect::<LoadtestFiles>(),
            Kit::Config => collect::<ConfigFiles>(),
            Kit::Systemd => collect::<SystemdFiles>(),
            Kit::All => Vec::new(),
        }
    }
}

/// The embedded files of the given parts, by relative path.
pub fn kit_files(parts: &[Kit]) -> BTreeMap<String, Cow<'static, [u8]>> {
    let mut wanted: Vec<Kit> = if parts.is_empty() || parts.contains(&Kit::All) {
        Kit::PARTS.to_vec()
    } else {
        parts.to_vec()
    };
    wanted.sort();
    wanted.dedup();
    wanted.into_iter().flat_map(Kit::files).collect()
}

/// Flags of `forgeline export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The directory to write into (created when missing); files keep their
    /// repository paths under it, e.g. DIR/alerts/forgeline.rules.yml.
    #[arg(long, value_name = "DIR", required_unless_present = "list")]
    pub out: Option<PathBuf>,
    /// What to export [default: all].
    #[arg(value_enum)]
    pub parts: Vec<Kit>,
    /// Replace files that exist with other content (identical files are
    /// always left as they are).
    #[arg(long)]
    pub force: bool,
    /// Print the paths that would be written, one per line, and write nothing.
    #[arg(long)]
    pub list: bool,
}

/// Runs `forgeline export`; returns the exit code (0 written, 1 refused or failed).
pub fn run(args: ExportArgs) -> i32 {
    let files = kit_files(&args.parts);
    if args.list {
        for path in files.keys() {
            println!("{path}");
        }
        return 0;
    }
    let Some(out) = args.out else {
        eprintln!("forgeline export: --out DIR is required");
        return 2;
    };
    match export(&out, &files, args.force) {
        Ok(report) => {
            eprintln!(
                "forgeline export: {} file(s) written, {} already up to date, in {}",
                report.written,
                report.unchanged,
                out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("forgeline export: {e}");
            1
        }
    }
}

/// What an export did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Files created or replaced.
    pub written: usize,
    /// Files that already held exactly the embedded bytes.
    pub unchanged: usize,
}

/// Writes `files` under `out`. Nothing is written when a file exists with
/// other content and `force` is off, so a refused export leaves the directory
/// as it was. Each file is written to a temporary name and renamed into
/// place, so a reader never sees half a rule file.
pub fn export(
    out: &Path,
    files: &BTreeMap<String, Cow<'static, [u8]>>,
    force: bool,
) -> Result<ExportReport, String> {
    let mut plan = Vec::new();
    let mut conflicts = Vec::new();
    let mut report = ExportReport::default();
    for (rel, data) in files {
        let target = out.join(safe_relative(rel)?);
        match std::fs::read(&target) {
            Ok(existing) if existing == data.as_ref() => report.unchanged += 1,
            Ok(_) if !force => conflicts.push(target.display().to_string()),
            Ok(_) => plan.push((target, data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => plan.push((target, data)),
            Err(e) => return Err(format!("cannot read {}: {e}", target.display())),
        }
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "{} file(s) exist with other content (use --force to replace them): {}",
            conflicts.len(),
            conflicts.join(", ")
        ));
    }
    for (target, data) in plan {
        write_file(&target, data)?;
        println!("{}", target.display());
        report.written += 1;
    }
    Ok(report)
}

/// The embedded path as a relative path that cannot leave the output folder.
fn safe_relative(rel: &str) -> Result<&Path, String> {
    let path = Path::new(rel);
    if path.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(path)
    } else {
        Err(format!(
            "embedded path {rel:?} is not a plain relative path"
        ))
    }
}

fn write_file(target: &Path, data: &[u8]) -> Result<(), String> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", target.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".forgeline-export")
        // Kit files are plain readable files (tempfile's default is 0600).
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(data).map_err(fail)?;
    tmp.persist(target).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_files_and_all_is_their_union() {
        let mut union = BTreeMap::new();
        for part in Kit::PARTS {
            let files = kit_files(&[part]);
            assert!(!files.is_empty(), "{part:?} exports nothing");
            union.extend(files);
        }
        assert_eq!(
            union.keys().collect::<Vec<_>>(),
            kit_files(&[Kit::All]).keys().collect::<Vec<_>>()
        );
        assert_eq!(kit_files(&[]).len(), union.len());
    }

    #[test]
    fn k6_results_are_not_part_of_the_kit() {
        assert!(kit_files(&[Kit::Loadtest])
            .keys()
            .all(|p| !p.starts_with("loadtest/results/")));
    }

    #[test]
    fn export_refuses_to_replace_a_changed_file_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let files = kit_files(&[Kit::Systemd]);
        let first = export(dir.path(), &files, false).unwrap();
        assert_eq!(first.written, files.len());
        let again = export(dir.path(), &files, false).unwrap();
        assert_eq!(
            again,
            ExportReport {
                written: 0,
                unchanged: files.len()
            }
        );

        let unit = dir.path().join("packaging/forgeline.service");
        std::fs::write(&unit, "edited").unwrap();
        let err = export(dir.path(), &files, false).unwrap_err();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&unit).unwrap(), "edited");

        export(dir.path(), &files, true).unwrap();
        assert_eq!(
            std::fs::read(&unit).unwrap(),
            files["packaging/forgeline.service"].as_ref()
        );
    }
}
